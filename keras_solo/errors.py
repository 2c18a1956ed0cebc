"""The project's one error type.

Every problem caused by user input (a file, a config key, a model path) is
raised as :class:`SoloError` with a one-line message that names the file and
the problem. The CLI prints it as ``error: <message>`` and exits with code 2;
``--debug`` shows the traceback.
"""


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


def where(path, *parts):
    """Formats a location prefix: ``file.json: image 3: annotation 7``."""
    return ": ".join([str(path)] + [str(p) for p in parts if p is not None and p != ""])
