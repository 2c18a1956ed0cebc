#!/usr/bin/env python3
"""Builds a TensorRT engine (fp16 or int8) from a keras-solo ONNX export.

    python export/build_tensorrt.py MODEL.onnx [--precision fp16|int8] [--out MODEL_fp16.engine]
        [--calib-dir DIR] [--calib-images N] [--workspace-gb G] [--overwrite]

The ONNX graph (keras_solo/export/) is TensorRT-buildable by design: the
per-cell masks are a MatMul of the mask features with the gathered kernel
columns, not a convolution whose weights are computed at run time (which
TensorRT rejects: onnx-tensorrt #609, the reason mmdeploy lists SOLO /
SOLOv2 as unsupported). Top-K, GatherND and Matrix NMS are ordinary ONNX ops.

Two ways to build, whichever is present:

- the TensorRT Python API (`import tensorrt`): parses the ONNX file, sets
  FP16 (and INT8) builder flags, and for int8 calibrates with an entropy
  calibrator on images from ``--calib-dir`` (letterboxed exactly like the
  runner does; device buffers through `cuda-python`). Layers from the
  "decode/" part of the graph (top-K, gathered masks, Matrix NMS) are
  constrained to float32, as in the int8 TFLite export;
- ``trtexec`` on PATH: ``--fp16`` / ``--int8`` (int8 without ``--calib-cache``
  gives timing only, not accuracy).

With neither (no NVIDIA GPU / no TensorRT, as on the project's CI machine)
it prints one line saying so and exits with code 2: the engine was not
built there.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys

import numpy as np


class BuildError(Exception):
    pass


NO_TENSORRT = ("TensorRT is not available here: no `tensorrt` Python package and no trtexec on PATH "
               "(an NVIDIA GPU with TensorRT >= 8.6 is needed); the engine was not built")


def calibration_batches(calib_dir, input_shape, count):
    """Letterboxed float32 (1, H, W, 3) batches from the images of a folder."""
    from keras_solo.errors import SoloError
    from keras_solo.runtime.image import IMAGE_EXTENSIONS, letterbox_image, read_image

    paths = sorted(p for p in glob.glob(os.path.join(calib_dir, "**", "*"), recursive=True)
                   if p.lower().endswith(IMAGE_EXTENSIONS))[:count]
    if not paths:
        raise BuildError(f"{calib_dir}: no calibration images found")
    _, height, width, _ = input_shape
    for path in paths:
        try:
            image = read_image(path)
        except SoloError as e:
            raise BuildError(str(e)) from None
        canvas, _ = letterbox_image(image, (width, height))
        yield canvas[None].astype(np.float32)


def build_with_python_api(trt, onnx_path, out, precision, calib_dir, calib_images, workspace_gb):
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # no GPU / driver
        raise BuildError(f"TensorRT cannot create a builder ({e}); no usable NVIDIA GPU? the engine was not built")
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"{onnx_path}: TensorRT cannot parse it: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not calib_dir:
            raise BuildError("--precision int8 needs --calib-dir (a folder of training images)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):  # keep the decoding (top-K, masks, Matrix NMS) in float32
            layer = network.get_layer(i)
            if "decode/" in layer.name:
                layer.precision = trt.float32
        input_shape = tuple(network.get_input(0).shape)
        config.int8_calibrator = _entropy_calibrator(trt, calibration_batches(calib_dir, input_shape, calib_images),
                                                     input_shape, out + ".calib_cache")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"{onnx_path}: TensorRT failed to build the engine (see the log above)")
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(bytes(serialized))
    os.replace(tmp, out)


def _entropy_calibrator(trt, batches, input_shape, cache_path):
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BuildError("int8 calibration needs the cuda-python package (pip install cuda-python)") from None

    nbytes = int(np.prod(input_shape)) * 4

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches = iter(batches)
            err, self.device = cudart.cudaMalloc(nbytes)
            if int(err) != 0:
                raise BuildError(f"cudaMalloc failed ({err})")

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            try:
                batch = np.ascontiguousarray(next(self.batches))
            except StopIteration:
                return None
            cudart.cudaMemcpy(self.device, batch.ctypes.data, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
            return [int(self.device)]

        def read_calibration_cache(self):
            if os.path.exists(cache_path):
                with open(cache_path, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache):
            with open(cache_path, "wb") as f:
                f.write(bytes(cache))

    return Calibrator()


def build_with_trtexec(trtexec, onnx_path, out, precision, calib_cache, workspace_gb):
    tmp = f"{out}.tmp{os.getpid()}"
    command = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={tmp}", "--fp16",
               f"--memPoolSize=workspace:{int(workspace_gb * 1024)}M"]
    if precision == "int8":
        command.append("--int8")
        if calib_cache:
            command.append(f"--calib={calib_cache}")
        else:
            print("warning: int8 through trtexec without --calib-cache: the engine is for timing, not accuracy",
                  file=sys.stderr)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(tmp):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise BuildError(f"{onnx_path}: trtexec failed: {' | '.join(tail)[:400]}")
    os.replace(tmp, out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="build_tensorrt.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", help="ONNX file from `keras-solo export --format onnx`")
    parser.add_argument("--precision", choices=("fp16", "int8"), default="fp16")
    parser.add_argument("--out", default=None, help="engine file (default: MODEL_<precision>.engine)")
    parser.add_argument("--calib-dir", default=None, help="int8: folder of calibration images")
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--calib-cache", default=None, help="int8 with trtexec: an existing calibration cache")
    parser.add_argument("--workspace-gb", type=float, default=4.0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        if not os.path.isfile(args.onnx):
            raise BuildError(f"{args.onnx}: no such ONNX file")
        out = args.out or f"{os.path.splitext(args.onnx)[0]}_{args.precision}.engine"
        if os.path.exists(out) and not args.overwrite:
            raise BuildError(f"{out}: already exists; use --overwrite or another --out")
        try:
            import tensorrt as trt
        except ImportError:
            trt = None
        trtexec = shutil.which("trtexec")
        if trt is not None:
            build_with_python_api(trt, args.onnx, out, args.precision, args.calib_dir, args.calib_images,
                                  args.workspace_gb)
        elif trtexec is not None:
            build_with_trtexec(trtexec, args.onnx, out, args.precision, args.calib_cache, args.workspace_gb)
        else:
            raise BuildError(NO_TENSORRT)
    except BuildError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB, TensorRT {args.precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
