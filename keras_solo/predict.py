"""Prediction on images, folders and videos: overlays + a JSON of detections.

`Predictor` wraps a loaded SOLO model: letterbox -> network -> decode
(Matrix NMS, in the graph) -> undo the letterbox (numpy). Videos get an
output video with the measured FPS drawn on every frame.
"""

import os
import sys
import time

import cv2
import numpy as np

from keras_solo import detections as det
from keras_solo.errors import SoloError, check_output, write_json


class Predictor:
    """Runs a SOLO model on RGB uint8 images of any size.

    Args:
        model: a built `SOLO`.
    """

    def __init__(self, model):
        from keras_solo.evaluate import inference_functions

        self.model = model
        self.width, self.height = model.input_size
        self._network, self._decode = inference_functions(model)

    def __call__(self, image):
        """Detections of one (h, w, 3) uint8 RGB image in its own pixels."""
        canvas, scale = det.letterbox_image(image, (self.width, self.height))
        decoded = self._decode(self._network(canvas[None].astype(np.float32)))
        one = {k: np.asarray(v)[0] for k, v in decoded.items()}
        return det.to_original(one, input_size=(self.height, self.width), orig_size=image.shape[:2],
                               scale=scale, mask_thr=self.model.mask_thr)


def list_sources(source):
    """Classifies a source: ("images", [paths]) or ("video", path)."""
    if not os.path.exists(source):
        raise SoloError(f"{source}: no such file or folder")
    if os.path.isdir(source):
        paths = sorted(os.path.join(source, n) for n in os.listdir(source)
                       if n.lower().endswith(det.IMAGE_EXTENSIONS))
        if not paths:
            raise SoloError(f"{source}: folder holds no images ({', '.join(det.IMAGE_EXTENSIONS)})")
        return "images", paths
    lower = source.lower()
    if lower.endswith(det.VIDEO_EXTENSIONS):
        capture = cv2.VideoCapture(source)  # fail before the slow model load
        ok = capture.isOpened() and capture.read()[0]
        problem = None if ok else det.video_open_problem(capture)
        capture.release()
        if problem:
            raise SoloError(f"{source}: {problem}")
        return "video", source
    if lower.endswith(det.IMAGE_EXTENSIONS):
        return "images", [source]
    raise SoloError(f"{source}: not an image ({', '.join(det.IMAGE_EXTENSIONS)}) or a video "
                    f"({', '.join(det.VIDEO_EXTENSIONS)})")


def read_rgb(path):
    image = det.read_rgb_or_none(path)  # the package's one EXIF policy (data/transforms.py)
    if image is None:
        raise SoloError(f"{path}: cannot read image (corrupt or not an image)")
    return image


def detections_json(name, detections, class_names):
    return {
        "source": name,
        "instances": [
            {"label": int(l), "class": class_names[int(l)], "score": round(float(s), 4),
             "bbox_xywh": [round(float(v), 1) for v in b], "segmentation": det.encode_rle(m)}
            for s, l, m, b in zip(detections["scores"], detections["labels"], detections["masks"],
                                  detections["boxes"])
        ],
    }


def next_run_dir(parent):
    """`parent/N` for the smallest N >= 1 that does not exist yet."""
    n = 1
    while os.path.exists(os.path.join(parent, str(n))):
        n += 1
    return os.path.join(parent, str(n))


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


def output_paths(out, sources):
    """The files `predict` writes into `out` for these sources."""
    paths = [os.path.join(out, "detections.json")]
    for path, name in zip(sources, det.overlay_names(sources)):
        stem = os.path.splitext(os.path.basename(path))[0]
        paths += [os.path.join(out, name), os.path.join(out, f"{stem}_pred.mp4")]
    return paths


def predict_images(predict, paths, out, class_names, *, score_thr=0.3, limit=0, progress=True):
    from tqdm import tqdm

    records = []
    paths = paths[:limit] if limit else paths
    for path, name in zip(tqdm(paths, desc="predict", unit="img", disable=not progress), det.overlay_names(paths)):
        image = read_rgb(path)
        found = predict(image)
        overlay = det.draw_overlay(image, found, class_names, score_thr=score_thr)
        cv2.imwrite(os.path.join(out, name), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        records.append(detections_json(os.path.basename(path), found, class_names))
    return records


def predict_video(predict, path, out, class_names, *, score_thr=0.3, limit=0, progress=True):
    from tqdm import tqdm

    capture = cv2.VideoCapture(path)
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        problem = det.video_open_problem(capture)
        capture.release()
        raise SoloError(f"{path}: {problem}")
    fps_in = capture.get(cv2.CAP_PROP_FPS) or 25.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    h, w = frame.shape[:2]
    stem = os.path.splitext(os.path.basename(path))[0]
    out_path = os.path.join(out, f"{stem}_pred.mp4")
    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (w, h))
    records, index, times = [], 0, []
    bar = tqdm(total=limit or count or None, desc="predict", unit="frame", disable=not progress)
    try:
        while ok and (not limit or index < limit):
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            t0 = time.perf_counter()
            found = predict(rgb)
            times.append(time.perf_counter() - t0)
            fps = 1.0 / max(1e-9, float(np.mean(times[-10:])))
            overlay = det.draw_overlay(rgb, found, class_names, score_thr=score_thr, fps=fps)
            writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            records.append(detections_json(f"{os.path.basename(path)}#{index}", found, class_names))
            index += 1
            bar.update(1)
            ok, frame = capture.read()
    finally:
        bar.close()
        capture.release()
        writer.release()
    warning = det.video_ended_early(path, index, count, limit)
    if warning:
        print(warning, file=sys.stderr)
    return records, (len(times) / sum(times) if times else 0.0)


def predict_command(args):
    kind, sources = list_sources(args.source)
    inputs = sources if kind == "images" else [sources]
    if args.out is None:  # like ultralytics: a fresh numbered folder, never an earlier one
        args.out = next_run_dir(os.path.join("runs", "predict"))
    prepare_out_dir(args.out, args.overwrite, inputs)  # before TensorFlow and the model load

    from keras_solo.model.solo import load_model

    model = load_model(args.model)
    predict = Predictor(model)
    if kind == "images":
        records = predict_images(predict, sources, args.out, model.class_names, score_thr=args.score,
                                 limit=args.limit)
        summary = f"{len(records)} images"
    else:
        records, fps = predict_video(predict, sources, args.out, model.class_names, score_thr=args.score,
                                     limit=args.limit)
        summary = f"{len(records)} frames at {fps:.1f} FPS"
    write_json(os.path.join(args.out, "detections.json"), records, what="detections", indent=None)
    print(f"predicted {summary}; overlays and detections.json in {args.out}")
