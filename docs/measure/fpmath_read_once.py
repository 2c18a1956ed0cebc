"""When oneDNN reads TF_SET_ONEDNN_FPMATH_MODE: python docs/measure/fpmath_read_once.py none|start|afterimport|later.

Sets the variable to BF16 before importing TensorFlow (start), after importing it (afterimport) or after a
first conv (later), then prints the relative error of two 1x1 convs against float64: ~3e-7 is float32
math, ~3e-3 bf16 math.
"""
import os
import sys

import numpy as np

WHEN = sys.argv[1]
if WHEN == "start":
    os.environ["TF_SET_ONEDNN_FPMATH_MODE"] = "BF16"
import tensorflow as tf  # noqa: E402


def relative_error(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((1, 32, 32, 64)).astype(np.float32)
    k = rng.standard_normal((1, 1, 64, 64 + n)).astype(np.float32)
    y = tf.nn.conv2d(x, k, 1, "SAME").numpy()
    ref = np.einsum("nhwc,co->nhwo", x.astype(np.float64), k[0, 0].astype(np.float64))
    return float(np.abs(y - ref).max() / np.abs(ref).max())


if WHEN == "afterimport":
    os.environ["TF_SET_ONEDNN_FPMATH_MODE"] = "BF16"
print(WHEN, "first conv", relative_error(0))
if WHEN == "later":
    os.environ["TF_SET_ONEDNN_FPMATH_MODE"] = "BF16"
print(WHEN, "second conv", relative_error(1))
