"""`keras-solo predict`: overlays and detections.json for an image, a folder
or a video, from a `.keras` model or an export (`.tflite`, `.onnx`).

The loop is the runtime's (`keras_solo.runtime.sources.predict_source`), the
same one `keras-solo-runtime predict` runs on a device; a `.keras` model runs
as a `keras_solo.evaluate.KerasEngine`.
"""

import os

from keras_solo.evaluate import load_engine
from keras_solo.runtime.cli import predict_command as run_predict
from keras_solo.runtime.sources import next_run_dir


def predict_command(args):
    if args.out is None:  # like ultralytics: a fresh numbered folder, never an earlier one
        args.out = next_run_dir(os.path.join("runs", "predict"))
    run_predict(lambda: load_engine(args.model, threads=args.threads), args, progress=True)
