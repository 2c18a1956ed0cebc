"""int8 calibration: the representative images and the network-only statistics.

int8 is mixed int8 / float on purpose (measured on TF 2.21 / Keras 3.15 /
ai-edge-litert 2.3). The network (backbone, FPN, heads, attention
projection: every tensor under the "network/" name scope) is full integer,
calibrated on `calib_images` training images drawn through the project's own
pipeline (`load_coco` + `build_dataset(training=False)`) with the converter's
min/max ranges (99.99th-percentile and MSE-chosen ranges, and 300 frames
instead of 100, scored no better on the final model: RESULTS, "int8
calibration of the final model"). Everything after it
stays float32: the category sigmoid, point NMS, top-K, the gathered mask
matmuls, Matrix NMS. Quantising them is wrong rather than slow (int8 top-K
makes ties of close scores, int8 intersection counts break the IoUs, and the
converter cannot even quantise point NMS: the -1 padding of a [0, 1] sigmoid
violates PADV2's same-scale rule).

To get that split `convert.convert_tflite` calibrates first
(`_experimental_calibrate_only`), `strip_calibration_outside_network` removes
the calibration statistics of every tensor outside "network/" from the
flatbuffer, and `mlir_quantize` runs with those nodes and TOPK_V2
deny-listed. `readback.op_report` lists which ops compute in int8 and which in
float (it is saved in the sidecar and printed).
"""

import warnings

import numpy as np

from keras_solo.export.graph import network_tensor


def calibration_images(coco, input_size, num_images, *, seed=0):
    """Yields up to ``num_images`` (1, H, W, 3) float32 images for int8 calibration.

    Drawn through the project's own pipeline (`build_dataset(training=False)`,
    shuffled with ``seed``): the same letterbox the runtime applies.
    """
    from keras_solo.data.pipeline import build_dataset

    with warnings.catch_warnings():  # instance slots are unused: images only
        warnings.simplefilter("ignore")
        dataset = build_dataset(coco, image_size=tuple(input_size), max_instances=1, mask_stride=8,
                                batch_size=1, training=False, shuffle=True, seed=seed)
    for images, _ in dataset.take(num_images):
        yield images.numpy().astype(np.float32)


def strip_calibration_outside_network(calibrated):
    """Removes calibration statistics from every tensor outside "network/".

    Args:
        calibrated: the flatbuffer bytes of a calibrate-only conversion.

    Returns:
        (model bytes, names of the ops outside the network) for `mlir_quantize`.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(calibrated, 0)
    denylist = set()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if not network_tensor(tensor.name.decode()) and tensor.quantization is not None:
                tensor.quantization = None
        for op in subgraph.operators or ():
            names = [subgraph.tensors[i].name.decode() for i in op.outputs]
            if names and not all(network_tensor(n) for n in names):
                denylist.update(names)
                denylist.add(";".join(names))  # multi-output ops carry a fused location
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), sorted(denylist)
