"""The TensorFlow-free runtime: exported models (.tflite, .onnx) on images,
folders and video.

numpy + cv2, and ai-edge-litert / onnxruntime imported when a model of that
format is opened. It imports nothing of keras_solo but `keras_solo.errors`
(tests/test_architecture.py holds that), so `pip install keras-solo[runtime]`
on a device needs no TensorFlow or Keras. The command is `keras-solo-runtime`
(`cli.py`).

- `formats`: the export formats (one table) and the sidecar `MODEL.json`.
- `image`: the one image reader (EXIF policy) and the inference letterbox.
- `detections`: undo the letterbox, boxes, COCO RLE, detections record, overlays.
- `engine`: `Engine` and `open_engine` (.tflite / .onnx).
- `sources`: the one image / video loop of predict.
- `bench`: benchmark, compare with peers, the dataset loop of evaluation.
"""
