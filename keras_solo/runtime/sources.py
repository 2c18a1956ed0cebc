"""Sources and outputs of `predict` and `track`: which files a source names
(`list_sources`), the output folder's checks (`prepare_out_dir`), the overlay
video (`VideoOutput`) and images (`write_overlay`), a video that ends early.
Both commands run their frames through `runtime.stream.run_stream`
(`stream.predict_source`, `stream.track_source`).

OpenCV crashes (segfault) on a path that is not valid UTF-8, so no path goes
to cv2 as it is: images are read with numpy and written as encoded bytes, and
a video is opened through an ASCII-named link (`cv2_path`). Every write is
checked: an overlay through `atomic_write`, a video written under a
temporary name and renamed only once it reads back whole.
"""

import contextlib
import os
import shutil
import tempfile

import cv2
import numpy as np

from keras_solo.errors import SoloError, atomic_write, check_output
from keras_solo.runtime.image import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS


def video_open_problem(capture):
    """Why a cv2.VideoCapture gave no first frame: one phrase for the error line."""
    if not capture.isOpened():
        return "cannot open video (unreadable or unsupported codec)"
    if int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) <= 0:
        return "holds no frames (0 frames in the container)"
    return "cannot decode its first frame (corrupt, or an unsupported codec)"


@contextlib.contextmanager
def cv2_path(path):
    """A path OpenCV can take for `path` (a file or a folder): the path itself
    when it is valid UTF-8, else an ASCII-named symbolic link to it in a
    temporary folder, removed on exit."""
    path = os.fspath(path)
    try:
        path.encode("utf-8")
        yield path
        return
    except UnicodeEncodeError:
        pass
    folder = tempfile.mkdtemp(prefix="keras-solo-link-")
    try:
        link = os.path.join(folder, "source" + os.path.splitext(path)[1].encode("ascii", "ignore").decode())
        os.symlink(os.path.abspath(path), link)
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def open_video(path):
    """(capture, first BGR frame) of a video, or a one-line SoloError naming the problem."""
    with cv2_path(path) as readable:  # the capture keeps the file open once made
        capture = cv2.VideoCapture(readable)
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        problem = video_open_problem(capture)
        capture.release()
        raise SoloError(f"{path}: {problem}")
    return capture, frame


def list_sources(source):
    """Classifies a source: ("images", [paths]) or ("video", path); a video must give a first frame."""
    if not os.path.exists(source):
        raise SoloError(f"{source}: no such file or folder")
    if os.path.isdir(source):
        paths = sorted(os.path.join(source, n) for n in os.listdir(source) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not paths:
            raise SoloError(f"{source}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return "images", paths
    lower = source.lower()
    if lower.endswith(VIDEO_EXTENSIONS):
        open_video(source)[0].release()  # fail before the (slow) model load
        return "video", source
    if lower.endswith(IMAGE_EXTENSIONS):
        return "images", [source]
    raise SoloError(f"{source}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or a video "
                    f"({', '.join(VIDEO_EXTENSIONS)})")


def next_run_dir(parent):
    """`parent/N` for the smallest N >= 1 that does not exist yet."""
    n = 1
    while os.path.exists(os.path.join(parent, str(n))):
        n += 1
    return os.path.join(parent, str(n))


def prepare_out_dir(out, overwrite, kind, sources):
    """Refuses a folder holding files (unless `overwrite`), the folder of a
    source image (its overlays would be the next run's inputs), or one where
    the output video would replace its source; then creates it.

    Args:
        kind, sources: `list_sources`' result.
    """
    check_output(out)
    real_out = os.path.realpath(out)
    if kind == "images" and real_out in {os.path.realpath(os.path.dirname(os.path.abspath(p))) for p in sources}:
        raise SoloError(f"{out}: is the source folder; overlays written there would be read as inputs "
                        "by the next run; use another --out")
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise SoloError(f"{out}: already holds files; use --overwrite or another --out")
    if kind == "video" and os.path.realpath(video_output_path(out, sources)) == os.path.realpath(sources):
        raise SoloError(f"{out}: writing here would replace the input {sources}; use another --out")
    os.makedirs(out, exist_ok=True)


def video_output_path(out, source):
    """The overlay video `predict` writes for a video source (`stream.PredictOutput`)."""
    return os.path.join(out, os.path.splitext(os.path.basename(source))[0] + "_pred.mp4")


def variable_rate(timestamps):
    """Whether frame timestamps (ms) are irregular: the longest interval over
    1.5 x the shortest (a constant-rate file's are equal to within rounding)."""
    steps = np.diff(np.asarray(timestamps, np.float64))
    return steps.size > 1 and steps.max() > 1.5 * max(steps.min(), 1e-3)


def video_ended_early(path, read, expected, limit=0, timestamps=(), fps=0.0):
    """A warning line when a video gave fewer frames than its container holds, else None.

    OpenCV's frame count is the container's duration x its nominal rate: a
    variable-rate file (`timestamps` irregular) holds fewer frames than that
    and is judged by time instead: truncated when its last frame starts more
    than 1.5 of its longest frame interval (plus one nominal frame) before
    the container's end.
    """
    wanted = min(expected, limit) if limit else expected
    if expected <= 0 or read >= wanted:
        return None
    if not limit and fps > 0 and variable_rate(timestamps):
        end_ms = expected * 1000.0 / fps
        gap = end_ms - (timestamps[-1] - timestamps[0])
        if gap <= 1.5 * float(np.diff(timestamps).max()) + 1000.0 / fps:
            return None
        return (f"warning: {path}: the file ended early: frames stop at {timestamps[-1] / 1000:.2f} s of "
                f"{end_ms / 1000:.2f} s (truncated or corrupt); the detections cover those frames only")
    return (f"warning: {path}: the file ended early: read {read} of {expected} frames "
            "(truncated or corrupt); the detections cover those frames only")


class VideoOutput:
    """The overlay video of `predict` and `track`, written safely.

    Frames go to a temporary ASCII-named file in the output folder (OpenCV
    cannot take every path) at the source's nominal rate; each frame is
    repeated to fill its own duration, so a variable-rate source keeps its
    timing. `close` keeps the file under its final name only when it reads
    back with every frame written (a full disk leaves an unplayable file),
    else removes it and raises the one-line error.
    """

    def __init__(self, path, fps, size):
        self.path, self.fps, self.written = path, float(fps) if fps and fps > 0 else 25.0, 0
        self._links = contextlib.ExitStack()
        folder = self._links.enter_context(cv2_path(os.path.dirname(os.path.abspath(path))))
        self._partial = os.path.join(os.path.dirname(os.path.abspath(path)), f".keras-solo-partial-{os.getpid()}.mp4")
        self._writer = cv2.VideoWriter(os.path.join(folder, os.path.basename(self._partial)),
                                       cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
        if not self._writer.isOpened():
            self.close(keep=False)
            raise SoloError(f"{path}: cannot write the video (the mp4v encoder did not open)")

    def write(self, frame, time_ms):
        """Writes `frame` (BGR), first repeating the previous one up to the slot of `time_ms`."""
        self.pad_to(int(round(time_ms * self.fps / 1000.0)))
        self._writer.write(frame)
        self._last, self.written = frame, self.written + 1

    def pad_to(self, frames):
        """Repeats the last frame up to `frames` in all (the last frame's own duration)."""
        while 0 < self.written < frames:
            self._writer.write(self._last)
            self.written += 1

    def close(self, keep=True):
        self._writer.release()
        try:
            if keep and self.written:
                with cv2_path(self._partial) as readable:
                    check = cv2.VideoCapture(readable)
                    complete = check.isOpened() and int(check.get(cv2.CAP_PROP_FRAME_COUNT) or 0) == self.written
                    check.release()
                if not complete:
                    raise SoloError(f"{self.path}: could not write the video (disk full or write error); "
                                    "no partial file kept")
                try:
                    os.replace(self._partial, self.path)
                except OSError as error:
                    raise SoloError(f"{self.path}: could not write the video ({error.strerror or error})") from None
        finally:
            if os.path.exists(self._partial):
                os.remove(self._partial)
            self._links.close()


def write_overlay(path, bgr):
    """An overlay as JPEG bytes written through Python (any file name), every write checked."""
    ok, data = cv2.imencode(".jpg", bgr)
    if not ok:
        raise SoloError(f"{path}: could not encode the overlay")
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data.tobytes())

    atomic_write(path, write, what="overlay", suffix=".jpg")


def progress_bar(total, desc, unit, enabled=True):
    """A tqdm bar, or a silent stand-in when disabled or tqdm is not installed (optional on a device)."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if enabled:
        return tqdm(total=total or None, desc=desc, unit=unit)

    class Silent:
        def update(self, n=1):
            pass

        def close(self):
            pass

    return Silent()
