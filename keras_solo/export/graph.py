"""The export graph: one graph, built from a loaded `SOLO`, serves every format.

    images (1, H, W, 3) float32 RGB 0..255, letterboxed (the model normalises)
      -> model(images)                               [scope "network/"]
      -> export_decoder(model, top_k).candidates(model, outputs)
           per level: sigmoid, SOLO's 2x2 point NMS, top-K_l (cell, class)
           pairs, masks for those K_l cells only: the gathered 1x1 kernel
           columns W[:, k] and attention rows V_k as an einsum (BATCH_MATMUL /
           MatMul with a run-time right operand, never a convolution with
           run-time weights, which TensorRT cannot build: onnx-tensorrt #609),
           resized to the finest mask size
      -> postprocess.decode: maskness, Matrix NMS, top max_det
      -> scores (1, D) float32, labels (1, D) int32 (-1 = none),
         masks (1, D, Hm0, Wm0) float32 probabilities, valid (1, D) bool

`K_l = split_nms_pre(top_k, grids, C)` (the candidate budget split over levels
in proportion to S_l^2), `N = sum(K_l)`, `D = min(N, model.decoder.max_per_img)`.
Every shape is static and time and memory do not grow with S^2.

- Input float32 RGB 0..255, not uint8: it is the model's own contract, the
  runtime letterboxes into a float buffer anyway, and an int8 model then keeps
  one QUANTIZE at the input instead of a CAST + QUANTIZE.
- Matrix NMS and top-K run in the graph: every op of `postprocess.decode`
  converts to TFLite builtins (TOPK_V2, GATHER, BATCH_MATMUL, SELECT_V2, EXP,
  REDUCE_MIN ...) and to ONNX opset 17. Only undoing the letterbox (resize to
  the original image, threshold) runs in the runtime, in numpy + cv2
  (`keras_solo.runtime.detections.to_original`).

Reference: SOLO, arXiv:1912.04488; SOLOv2 (Matrix NMS), arXiv:2003.10152.
"""

import numpy as np

from keras_solo.errors import SoloError
from keras_solo.runtime.formats import OUTPUT_NAMES

INPUT_NAME = "images"
NETWORK_SCOPE = "network"


def network_tensor(name):
    """Whether a tensor of the converted graph belongs to the network (scope "network/")."""
    return name.startswith(NETWORK_SCOPE + "/")


def use_export_decoding(model, export_config):
    """Sets the model's decoder to the export's Matrix NMS pooling
    (``export.nms_pool``; 0 keeps ``eval.nms_pool``)."""
    if export_config is not None and export_config.nms_pool:
        model.decoder = model.decoder.replace(nms_pool=int(export_config.nms_pool))
    return model


def export_plan(model, top_k):
    """The fixed output sizes of the export graph.

    Args:
        model: a built `SOLO`.
        top_k: candidate budget over all levels.

    Returns:
        dict: ``per_level`` (K_l per level, proportional to S_l^2),
        ``num_candidates`` N = sum(K_l), ``max_detections`` D = min(N,
        model.decoder.max_per_img), ``mask_size`` (Hm0, Wm0), ``input_size`` (W, H).
    """
    from keras_solo.postprocess import split_nms_pre

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise SoloError(f"--top-k {top_k!r}: must be an integer >= 1")
    per_level = [int(k) for k in split_nms_pre(top_k, model.grids, model.num_classes)]
    num = sum(per_level)
    return {
        "per_level": per_level,
        "num_candidates": num,
        "max_detections": min(num, int(model.decoder.max_per_img)),
        "mask_size": [int(v) for v in model.output_mask_size],
        "input_size": [int(v) for v in model.input_size],
    }


def export_decoder(model, top_k):
    """The model's decoder with the export's candidate budget `top_k` and D = `export_plan`'s max_detections."""
    return model.decoder.replace(nms_pre=top_k, max_per_img=export_plan(model, top_k)["max_detections"])


def serving_function(model, *, top_k):
    """The export graph as a Python function of a (1, H, W, 3) image batch.

    Args:
        model: a built `SOLO`.
        top_k: candidate budget (see `export_plan`).

    Returns:
        ``fn(images) -> {"scores", "labels", "masks", "valid"}`` with the
        shapes of the module docstring. Trace it with ``tf.function``.
    """
    import tensorflow as tf

    decoder = export_decoder(model, top_k)

    def serve(images):
        with tf.name_scope(NETWORK_SCOPE):
            outputs = model(images, training=False)
        with tf.name_scope("decode"):  # scopes decode/candidates, decode/nms: litert_profile's blocks
            decoded = model.decode(outputs, decoder=decoder)
        return {name: decoded[name] for name in OUTPUT_NAMES}

    return serve


def input_signature(model):
    import tensorflow as tf

    width, height = model.input_size
    return [tf.TensorSpec((1, height, width, 3), tf.float32, name=INPUT_NAME)]


def reference_outputs(model, images, *, top_k):
    """The export graph run by TensorFlow/Keras (the parity reference).

    Args:
        images: (B, H, W, 3) float32 RGB 0..255 at the model's input size.

    Returns:
        dict of numpy arrays, as the exported files return them.
    """
    import tensorflow as tf

    fn = tf.function(serving_function(model, top_k=top_k), reduce_retracing=True)
    images = np.asarray(images, np.float32)
    results = [{k: v.numpy() for k, v in fn(tf.constant(images[i:i + 1])).items()} for i in range(len(images))]
    return {k: np.concatenate([r[k] for r in results]) for k in OUTPUT_NAMES}


def resize_model(model, imgsz):
    """The same weights at another input size (W, H); the model itself when equal.

    Raises:
        SoloError: a size that is not a positive multiple of 32 (64 with P6
            and ``head_resize: none``).
    """
    if imgsz is None or tuple(imgsz) == tuple(model.input_size):
        return model
    from keras_solo.model.solo import SOLO

    width, height = (int(v) for v in imgsz)
    step = 64 if (model.head_resize == "none" and "P6" in model.levels) else 32
    if width <= 0 or height <= 0 or width % step or height % step:
        raise SoloError(f"--imgsz {width}x{height}: width and height must be positive multiples of {step}")
    config = model.get_config()
    # The serialised PyramidBackbone holds the input size (and the shape it was built for: dropped).
    pyramid = {key: value for key, value in config["backbone"].items() if key != "build_config"}
    config["backbone"] = {**pyramid, "config": {**pyramid["config"], "input_size": [width, height]}}
    resized = SOLO.from_config(config)
    resized.build()
    resized.set_weights(model.get_weights())
    return resized
