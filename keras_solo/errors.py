"""The project's one error type.

Every problem caused by user input (a file, a config key, a model path) is
raised as :class:`SoloError` with a one-line message that names the file and
the problem. The CLI prints it as ``error: <message>`` and exits with code 2;
``--debug`` shows the traceback.
"""

import json
import os
import sys
import tempfile


class SoloError(Exception):
    """A user-facing error with a one-line message.

    Args:
        message: what went wrong, naming the file / key / id involved. Newlines
            are folded so the message always prints on one line.
    """

    exit_code = 2

    def __init__(self, message):
        message = " ".join(str(message).split())
        super().__init__(message)


def check_output(path, *, folder=True, option="--out"):
    """The one output-path check, before any work: a one-line SoloError when
    `path` cannot be written as a folder (or, with ``folder=False``, as a
    file): an existing file where a folder is wanted (or the reverse), or no
    write permission in the nearest existing folder above it.
    """
    path = os.fspath(path)
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise SoloError(f"{path}: exists and is not a folder; {option} must name a folder")
    if not folder and os.path.isdir(path):
        raise SoloError(f"{path}: is a folder; {option} must name a file")
    existing = os.path.abspath(path) if (folder and os.path.isdir(path)) else os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise SoloError(f"{path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SoloError(f"{path}: cannot write here ({existing} is not writable)")
    _probe_write(path if folder else os.path.dirname(os.path.abspath(path)), path)


def _probe_write(folder, path):
    """Creates `folder` (the output goes there; it stays) and a probe file in
    it, which it removes: `os.access` says yes to places that refuse
    (``/proc/sub`` as root, a read-only mount), and the OS error is the
    one-line error here instead of a traceback later. Nothing is removed but
    the probe, so commands started together into one new folder (the workers
    of a multi-worker run) do not pull it from under each other."""
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".keras-solo-probe-")
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise SoloError(f"{path}: cannot write here ({error.strerror or error})") from None


def interrupt_on_sigterm():
    """SIGTERM (`kill`, a service stop) ends a command as Ctrl-C does:
    `finally` blocks and temporary folders are cleaned up, and the command
    prints "interrupted" (the default action ended the process on the spot).
    Call it from a command's main thread."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        pass


def printable_paths():
    """Makes stdout print a file name that is not valid UTF-8 with backslash
    escapes (as stderr does) instead of failing with UnicodeEncodeError."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def where(path, *parts):
    """Formats a location prefix: ``file.json: image 3: annotation 7``."""
    return ": ".join([str(path)] + [str(p) for p in parts if p is not None and p != ""])


def atomic_write(path, write, *, what, suffix=""):
    """Writes a file through a temporary name, then renames it into place.

    A kill or a full disk never leaves a truncated file where a good one
    stood: on OSError the temporary file is removed and a one-line SoloError
    says whether the previous file is intact.

    Args:
        path: the final file.
        write: function(tmp_path) that writes the content.
        what: what is written, for the message ("checkpoint", "config").
        suffix: ending the temporary name needs (e.g. ".keras").
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:  # any failure (a full disk, unserialisable data, Ctrl-C): no temp file left
        if os.path.exists(tmp):
            os.remove(tmp)
        if not isinstance(e, OSError):
            raise
        kept = "the previous file is intact" if os.path.exists(path) else "no previous file"
        raise SoloError(f"{path}: could not write {what} ({e.strerror or e}); {kept}") from None


def write_json(path, data, *, what="JSON file", indent=1, **dump_options):
    """`json.dump` through `atomic_write`: never a half-written JSON file.

    Args:
        path: the final file (its folder must exist).
        data: a JSON-serialisable object.
        what: what is written, for the error message.
        indent: `json.dump` indent; None for compact output.
        dump_options: more `json.dump` keyword arguments.
    """
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent, **dump_options)

    atomic_write(path, write, what=what)
