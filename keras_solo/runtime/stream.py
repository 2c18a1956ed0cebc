"""Video and live streams with capture, inference and output overlapped:
`track` (`track_source`) and `predict` (`predict_source`) run their frames here.

Three threads, joined by two queues::

    capture (reads frames) -> [slot] -> inference (this thread) -> [queue] -> tracking + output (draws, writes)

The tracker runs beside the next frame's inference, not after it: its time
per frame (up to about 1 ms at 20 objects) would otherwise add to every
frame's, a share that matters for a small model (5-10% of the demo's).

- A **file** (or a folder of images, or one image) gives every frame: the
  capture thread waits while the slot is full.
- A **live** source (a camera index, a stream URL, or a file with
  ``live=True``, read at its own frame rate) never queues: the slot holds
  the latest frame only, and a frame not taken before the next arrives is
  dropped and counted, so the capture-to-result latency stays within about
  one inference time however slow the model is.

Each frame's stages are timed (capture, letterbox, network, decode, track,
draw + write) and so is its end-to-end latency, from the moment it was
captured to the moment its result (detections, tracked) was ready: after
the tracker, before drawing.
Ctrl-C (or SIGTERM, see `errors.interrupt_on_sigterm`) stops the capture and
lets the output thread write everything done so far.
"""

import os
import queue
import sys
import threading
import time

import cv2
import numpy as np

from keras_solo.errors import SoloError, atomic_write, write_json
from keras_solo.runtime.detections import detections_record, draw_overlay, overlay_names
from keras_solo.runtime.image import IMAGE_EXTENSIONS, read_image
from keras_solo.runtime.sources import (VideoOutput, cv2_path, variable_rate, video_ended_early, video_open_problem,
                                        write_overlay)
from keras_solo.runtime.track import mot_lines, track_record

LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
STAGES = ("capture", "letterbox", "network", "decode", "track", "output")
OPEN_TIMEOUT_MS = 10_000  # a stream that answers nothing in this time is dead (OpenCV's FFmpeg default is 30 s)
_END = object()


class Frame:
    """One captured frame: its index, (h, w, 3) uint8 RGB image, capture time
    (`time.perf_counter`), time in the source (ms) and file name (folders)."""

    __slots__ = ("index", "image", "captured", "time_ms", "name", "timing", "latency")

    def __init__(self, index, image, captured, time_ms, name=None):
        self.index, self.image, self.captured, self.time_ms, self.name = index, image, captured, time_ms, name
        self.timing, self.latency = {}, None


def source_kind(source):
    """"camera" (a device index), "stream" (a URL), "folder", "image" (one image file) or "video"."""
    text = os.fspath(source)
    if text.isdigit():
        return "camera"
    if text.lower().startswith(LIVE_PREFIXES):
        return "stream"
    if os.path.isdir(text):
        return "folder"
    if os.path.isfile(text) and text.lower().endswith(IMAGE_EXTENSIONS):
        return "image"
    return "video"


class StreamSource:
    """Frames of a camera, a stream URL, a video file, a folder of images or one image.

    ``paths`` lists the image files (a folder's, sorted; one image's) and is
    None for the others.

    Args:
        source: camera index ("0"), URL, video file, folder or image file.
        live: read a file as a live source (at its frame rate, latest frame
            only); cameras and URLs are always live.
        limit: stop after this many frames (0 = all).

    Raises:
        SoloError: one line when the source cannot be opened or gives no
            frame (an unopenable camera, a dead stream, a 0-frame file).
    """

    def __init__(self, source, *, live=False, limit=0):
        self.source, self.kind, self.limit = os.fspath(source), source_kind(source), int(limit)
        self.live = live or self.kind in ("camera", "stream")
        self.paced = live and self.kind in ("video", "folder", "image")  # a file read at its own rate
        self.capture, self.paths, self.fps, self.frame_count = None, None, 0.0, 0
        if self.kind in ("folder", "image"):
            self.paths = [self.source] if self.kind == "image" else sorted(
                os.path.join(self.source, n) for n in os.listdir(self.source) if n.lower().endswith(IMAGE_EXTENSIONS))
            if not self.paths:
                raise SoloError(f"{self.source}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            self.fps, self.frame_count = 30.0, len(self.paths)
            self.first = read_image(self.paths[0])
            return
        self.capture = self._open()
        if self.kind == "video":
            self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, first = self.capture.read()
        if not ok:
            problem = self._problem("gives no frame")
            self.capture.release()
            raise SoloError(f"{self._label()}: {problem}")
        self.first = cv2.cvtColor(first, cv2.COLOR_BGR2RGB)
        self.first_ms = self.capture.get(cv2.CAP_PROP_POS_MSEC)
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 0.0

    def _label(self):
        return f"camera {self.source}" if self.kind == "camera" else self.source

    def _problem(self, what):
        if self.kind == "camera":
            return f"cannot read from the camera ({what}: no such device, busy, or no permission)"
        if self.kind == "stream":
            return f"cannot read the stream ({what} within {OPEN_TIMEOUT_MS // 1000} s: unreachable, ended or unsupported)"
        return video_open_problem(self.capture)

    def _open(self):
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
        if self.kind == "camera":
            capture = cv2.VideoCapture(int(self.source))
        elif self.kind == "stream":
            capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, timeouts)
        else:
            if not os.path.exists(self.source):
                raise SoloError(f"{self.source}: no such file or folder")
            with cv2_path(self.source) as readable:  # the capture keeps the file open once made
                capture = cv2.VideoCapture(readable)
        if not capture.isOpened():
            self.capture = capture
            problem = self._problem("it does not open")
            capture.release()
            raise SoloError(f"{self._label()}: {problem}")
        return capture

    def frames(self, stop):
        """Yields `Frame`s until the source ends, `limit` is reached or `stop` is set."""
        start = time.perf_counter()
        index = 0
        image, time_ms = self.first, 0.0
        while image is not None and not stop.is_set() and (not self.limit or index < self.limit):
            name = os.path.basename(self.paths[index]) if self.paths else None
            now = time.perf_counter()
            # a live frame's time is when it arrived: the output video keeps the real pace, gaps included
            yield Frame(index, image, now, (now - start) * 1000.0 if self.live else time_ms, name)
            index += 1
            if self.paced:  # a file as a live camera: the next frame exists from its time on
                due = start + index / (self.fps or 30.0)
                while time.perf_counter() < due and not stop.is_set():
                    time.sleep(min(0.005, max(0.0, due - time.perf_counter())))
            image, time_ms = self._read(index)

    def _read(self, index):
        if self.paths is not None:
            return (read_image(self.paths[index]), index * 1000.0 / self.fps) if index < len(self.paths) else (None, 0)
        ok, frame = self.capture.read()
        if not ok:
            return None, 0.0
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.capture.get(cv2.CAP_PROP_POS_MSEC) - self.first_ms

    def close(self):
        if self.capture is not None:
            self.capture.release()


class _Capture(threading.Thread):
    """Reads `source` into a one-slot mailbox (live: the newest frame wins,
    the replaced one is counted as dropped) or a short queue (files: waits)."""

    def __init__(self, source, stop):
        super().__init__(daemon=True, name="keras-solo-capture")
        self.source, self.stop = source, stop
        self.slot = queue.Queue(maxsize=1 if source.live else 4)
        self.dropped, self.read_times, self.error = 0, [], None

    def run(self):
        try:
            frames = self.source.frames(self.stop)
            while True:
                t0 = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                self.read_times.append(time.perf_counter() - t0)
                if self.source.live:
                    self._replace(frame)
                else:
                    self._put(frame)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self.error = error
        finally:
            self._put(_END)

    def _replace(self, frame):
        while True:
            try:
                self.slot.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self.slot.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _put(self, item):
        while not self.stop.is_set() or item is _END:
            try:
                self.slot.put(item, timeout=0.1)
                return
            except queue.Full:
                if item is _END and self.stop.is_set():  # nobody takes frames any more: make room
                    try:
                        self.slot.get_nowait()
                    except queue.Empty:
                        pass


class _Output(threading.Thread):
    """For each frame's detections, in order: `tracker.update` (when there is
    a tracker; the frame's result and latency are then ready), then
    `write(frame, result)`; both timed."""

    def __init__(self, write, tracker):
        super().__init__(daemon=True, name="keras-solo-output")
        self.write, self.tracker, self.queue, self.error = write, tracker, queue.Queue(maxsize=8), None

    def run(self):
        while True:
            item = self.queue.get()
            if item is _END:
                return
            frame, result = item
            try:
                if self.error is not None:
                    continue  # drain: the main thread stops at its next put
                t0 = time.perf_counter()
                if self.tracker is not None:
                    result = self.tracker.update(result)
                    frame.latency = time.perf_counter() - frame.captured
                done = time.perf_counter()
                frame.timing["track"] = done - t0
                self.write(frame, result)
                frame.timing["output"] = time.perf_counter() - done
            except BaseException as error:  # noqa: BLE001 - handed to the main thread
                self.error = error
            finally:
                frame.image = None  # run_stream keeps each frame's times to the end, not its pixels


def run_stream(engine, source, write, *, score_thr=0.3, tracker=None, progress=None):
    """Runs `engine` (and `tracker`) over `source`'s frames with the three threads.

    Args:
        engine: a `runtime.engine.Engine` (or anything with its ``__call__``).
        source: a `StreamSource`.
        write: ``write(frame, result)``, called in order in the output thread:
            draws and writes (result: the engine's detections, tracked when
            there is a tracker; ``frame.timing`` holds the stages so far and
            ``call``, the engine's whole call), e.g. a `TrackOutput` or a
            `PredictOutput`.
        tracker: optional `runtime.track.Tracker`, run in the output thread
            (beside the next frame's inference), each frame in order.
        progress: optional callable, called once per processed frame (after
            its inference).

    Returns:
        dict: frames (processed), dropped (live: replaced before inference),
        seconds (wall), stages (per-stage seconds, lists), latency (capture
        to result, seconds per frame whose result was ready), interrupted
        (Ctrl-C).
    """
    stop = threading.Event()
    capture, output = _Capture(source, stop), _Output(write, tracker)
    stages, frames, interrupted = {}, [], False
    start = time.perf_counter()
    capture.start()
    output.start()
    try:
        while True:
            frame = capture.slot.get()
            if frame is _END:
                break
            found, timing = engine(frame.image, min_score=score_thr)
            if tracker is None:  # the result is ready; else it is once the output thread has tracked it
                frame.latency = time.perf_counter() - frame.captured
            parts = {name: timing.get(key, 0.0) for name, key in
                     (("letterbox", "preprocess"), ("network", "network"), ("decode", "decode"))}
            frame.timing.update(parts, call=timing.get("total", sum(parts.values())))  # call: the whole engine call
            frames.append(frame)
            if output.error is not None:
                break
            output.queue.put((frame, found))
            if progress is not None:
                progress()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        output.queue.put(_END)
        output.join()
        capture.join(timeout=5)
        source.close()
    for error in (output.error, capture.error):
        if error is not None:
            raise error
    stages["capture"] = capture.read_times  # every captured frame, dropped ones too
    for name in STAGES[1:]:
        stages[name] = [frame.timing.get(name, 0.0) for frame in frames]
    return {"frames": len(frames), "dropped": capture.dropped, "seconds": time.perf_counter() - start,
            "stages": stages, "latency": [frame.latency for frame in frames if frame.latency is not None],
            "interrupted": interrupted}


def format_stream_report(result):
    """The end-of-run lines: frames/s, drops, per-stage and end-to-end latency percentiles (ms)."""
    def ms(values):
        values = np.asarray([v for v in values if v is not None], np.float64) * 1000.0
        if not values.size:
            return "-"
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return f"p50 {p50:.1f} / p90 {p90:.1f} / p99 {p99:.1f} ms"

    fps = result["frames"] / max(result["seconds"], 1e-9)
    lines = [f"{result['frames']} frames in {result['seconds']:.1f} s ({fps:.1f} frames/s); "
             f"{result['dropped']} stale frames dropped" + (" (interrupted)" if result["interrupted"] else "")]
    for name in STAGES:
        lines.append(f"  {name:<10} {ms(result['stages'][name])}")
    lines.append(f"  capture -> result {ms(result['latency'])}")
    return "\n".join(lines)


class OverlayOutput:
    """The shape of `run_stream`'s writers (`TrackOutput`, `PredictOutput`):
    called in the output thread with each frame and its result, in order,
    then closed (``close(keep)``). Overlays go into `out`: a video ``<stem><suffix>.mp4`` at
    the source's timing (`VideoOutput`: never a partial file under the final
    name), or one image per source image (`overlay_names`); one record per
    frame in ``records``."""

    suffix = ""

    def __init__(self, out, source, class_names):
        self.out, self.class_names, self.records = out, class_names, []
        self.video, self.names = None, {}
        if source.paths is not None:
            self.names = dict(zip((os.path.basename(p) for p in source.paths), overlay_names(source.paths)))
        else:
            stem = {"camera": f"camera{source.source}", "stream": "stream"}.get(
                source.kind, os.path.splitext(os.path.basename(source.source))[0])
            self.video = VideoOutput(os.path.join(out, f"{stem}{self.suffix}.mp4"), source.fps,
                                     source.first.shape[1::-1])

    def put(self, frame, overlay):
        """Writes `frame`'s overlay (RGB): the video's next frame at its time, or its image file."""
        overlay = cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)
        if self.video is not None:
            self.video.write(overlay, frame.time_ms)
        else:
            write_overlay(os.path.join(self.out, self.names[frame.name]), overlay)

    def close_video(self, keep):
        """Keeps the video (when `keep` and a frame was written) or removes it; the one-line error of a failed write."""
        if self.video is not None:
            self.video.close(keep=keep and bool(self.records))


class TrackOutput(OverlayOutput):
    """What `track_source` writes into `out`: overlays coloured by track ID (a
    video ``<stem>_track.mp4``, or one image per folder member),
    ``tracks.json`` (`track.track_record` per frame) and ``tracks_mot.txt``
    (MOTChallenge lines)."""

    suffix = "_track"

    def __init__(self, out, source, class_names):
        super().__init__(out, source, class_names)
        self.mot = []

    def __call__(self, frame, tracked):
        self.put(frame, draw_overlay(frame.image, tracked, self.class_names, score_thr=0.0))
        record = track_record(frame.index, tracked, self.class_names)
        if frame.name:
            record["source"] = frame.name
        self.records.append(record)
        self.mot.extend(mot_lines(frame.index, tracked))

    def close(self, keep=True):
        self.close_video(keep)
        write_json(os.path.join(self.out, "tracks.json"), self.records, what="tracks", indent=None)

        def write_mot(tmp):
            with open(tmp, "w") as f:
                f.write("".join(line + "\n" for line in self.mot))

        atomic_write(os.path.join(self.out, "tracks_mot.txt"), write_mot, what="MOT tracks")


class PredictOutput(OverlayOutput):
    """What `predict_source` writes into `out`: overlays (a video
    ``<stem>_pred.mp4`` with the engine's FPS drawn on every frame, or one
    image per source image) and ``detections.json`` (`detections_record` per
    image / frame: the file name, ``video.mp4#i`` for a video's frame i).

    ``times`` holds each engine call's seconds. At `close` a video that ended
    early is a warning line (`video_ended_early`), and the last frame of a
    whole variable-rate video is repeated to the container's length."""

    suffix = "_pred"

    def __init__(self, out, source, class_names, *, score_thr=0.3):
        super().__init__(out, source, class_names)
        self.source, self.score_thr, self.times, self.timestamps = source, score_thr, [], []

    def __call__(self, frame, found):
        self.times.append(frame.timing["call"])
        fps = None if self.video is None else 1.0 / max(1e-9, float(np.mean(self.times[-10:])))
        self.put(frame, draw_overlay(frame.image, found, self.class_names, score_thr=self.score_thr, fps=fps))
        if self.video is not None:
            self.timestamps.append(self.source.first_ms + frame.time_ms)  # the container's times, for the warning
        name = frame.name if self.video is None else f"{os.path.basename(self.source.source)}#{frame.index}"
        self.records.append(detections_record(name, found, self.class_names))

    def close(self, keep=True, finished=True):
        """`keep`: the run ended without an error (Ctrl-C keeps what was done); `finished`: it read the
        whole source (or --limit), not interrupted. A failed write keeps no video and no detections.json."""
        warning = None
        if self.video is not None and finished and keep:
            source = self.source
            warning = video_ended_early(source.source, len(self.records), source.frame_count, source.limit,
                                        self.timestamps, source.fps)
            if not warning and not source.limit:
                self.video.pad_to(source.frame_count if variable_rate(self.timestamps) else self.video.written)
        self.close_video(keep)
        if warning:
            print(warning, file=sys.stderr)
        if keep:
            write_json(os.path.join(self.out, "detections.json"), self.records, what="detections", indent=None)


def _open_output(source, make):
    """`make()`, the output of a stream; the source is closed when it fails (a camera
    released, a reader thread ended), as `run_stream` closes it otherwise."""
    try:
        return make()
    except BaseException:
        source.close()
        raise


def predict_source(engine, source, out, *, score_thr=0.3, progress=None):
    """Detects in `source` (a `StreamSource`: a video, a folder or an image)
    with `engine` into `out` (`PredictOutput`; made by
    `sources.prepare_out_dir`), capture, inference and output overlapped
    (`run_stream`); returns `run_stream`'s result plus ``records`` (the
    detections.json records) and ``times`` (seconds per engine call).
    The first failed write is the one-line error; Ctrl-C keeps what was
    done."""
    output = _open_output(source, lambda: PredictOutput(out, source, engine.class_names, score_thr=score_thr))
    result = None
    try:
        result = run_stream(engine, source, output, score_thr=score_thr, progress=progress)  # closes the source
    finally:
        output.close(keep=result is not None, finished=result is not None and not result["interrupted"])
    result.update(records=output.records, times=output.times)
    return result


def track_source(engine, source, out, *, tracker, score_thr=0.1, progress=None):
    """Tracks `source` (a `StreamSource`) with `engine` and `tracker` into
    `out` (`TrackOutput`); returns `run_stream`'s result plus ``tracks``
    (distinct track IDs reported)."""
    output = _open_output(source, lambda: TrackOutput(out, source, engine.class_names))
    finished = False
    try:
        result = run_stream(engine, source, output, score_thr=score_thr, tracker=tracker, progress=progress)
        finished = True
    finally:
        output.close(keep=finished)
    result["tracks"] = len({r["track_id"] for record in output.records for r in record["instances"]})
    return result
