"""The one image / video loop: overlays plus detections.json for an image, a
folder of images or a video, for any engine (`keras-solo predict` and
`keras-solo-runtime predict`)."""

import os
import sys

import cv2
import numpy as np

from keras_solo.errors import SoloError, check_output, write_json
from keras_solo.runtime.detections import detections_record, draw_overlay, overlay_names
from keras_solo.runtime.image import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, read_image


def video_open_problem(capture):
    """Why a cv2.VideoCapture gave no first frame: one phrase for the error line."""
    if not capture.isOpened():
        return "cannot open video (unreadable or unsupported codec)"
    if int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) <= 0:
        return "holds no frames (0 frames in the container)"
    return "cannot decode its first frame (corrupt, or an unsupported codec)"


def open_video(path):
    """(capture, first BGR frame) of a video, or a one-line SoloError naming the problem."""
    capture = cv2.VideoCapture(os.fspath(path))
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


def output_paths(out, sources):
    """The files `predict_source` writes into `out` for these sources."""
    paths = [os.path.join(out, "detections.json")]
    for path, name in zip(sources, overlay_names(sources)):
        stem = os.path.splitext(os.path.basename(path))[0]
        paths += [os.path.join(out, name), os.path.join(out, f"{stem}_pred.mp4")]
    return paths


def prepare_out_dir(out, overwrite, sources=()):
    """Refuses a folder holding files (unless `overwrite`) or one where an
    output would replace an input image; then creates it."""
    check_output(out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise SoloError(f"{out}: already holds files; use --overwrite or another --out")
    outputs = {os.path.realpath(p) for p in output_paths(out, sources)}
    clash = [p for p in sources if os.path.realpath(p) in outputs]
    if clash:
        raise SoloError(f"{out}: writing here would replace the input {clash[0]}; use another --out")
    os.makedirs(out, exist_ok=True)


def video_ended_early(path, read, expected, limit=0):
    """A warning line when a video gave fewer frames than its container says, else None."""
    wanted = min(expected, limit) if limit else expected
    if expected > 0 and read < wanted:
        return (f"warning: {path}: the file ended early: read {read} of {expected} frames "
                "(truncated or corrupt); the detections cover those frames only")
    return None


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


def _image_frames(paths):
    for path, name in zip(paths, overlay_names(paths)):
        yield os.path.basename(path), name, read_image(path)


def _video_frames(capture, frame, limit):
    index = 0
    while frame is not None and (not limit or index < limit):
        yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1
        ok, frame = capture.read()
        frame = frame if ok else None


def predict_source(engine, kind, sources, out, *, score_thr=0.3, limit=0, progress=True):
    """Runs `engine` over `list_sources`' result and writes into `out` (made by `prepare_out_dir`).

    Images get an overlay each (`overlay_names`), a video `<stem>_pred.mp4`
    with the measured FPS drawn on every frame; both get `detections.json`
    (`detections_record` per image / frame, detections above `score_thr`).

    Returns:
        (records, seconds per call of the engine).
    """
    names = engine.class_names
    records, times = [], []
    if kind == "images":
        paths = sources[:limit] if limit else sources
        frames, writer, capture, count = _image_frames(paths), None, None, len(paths)
    else:
        capture, first = open_video(sources)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        h, w = first.shape[:2]
        stem = os.path.splitext(os.path.basename(sources))[0]
        writer = cv2.VideoWriter(os.path.join(out, f"{stem}_pred.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                 capture.get(cv2.CAP_PROP_FPS) or 25.0, (w, h))
        base = os.path.basename(sources)
        frames = ((f"{base}#{i}", None, rgb) for i, rgb in _video_frames(capture, first, limit))
    bar = progress_bar(min(count, limit) if limit and count else count, "predict", "img" if writer is None else "frame",
                       progress)
    try:
        for source, overlay_name, image in frames:
            found, timing = engine(image, min_score=score_thr)
            times.append(timing["total"])
            fps = None if writer is None else 1.0 / max(1e-9, float(np.mean(times[-10:])))
            overlay = cv2.cvtColor(draw_overlay(image, found, names, score_thr=score_thr, fps=fps), cv2.COLOR_RGB2BGR)
            if writer is None:
                cv2.imwrite(os.path.join(out, overlay_name), overlay)
            else:
                writer.write(overlay)
            records.append(detections_record(source, found, names))
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            capture.release()
            writer.release()
    if writer is not None:
        warning = video_ended_early(sources, len(records), count, limit)
        if warning:
            print(warning, file=sys.stderr)
    write_json(os.path.join(out, "detections.json"), records, what="detections", indent=None)
    return records, times
