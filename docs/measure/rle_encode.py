"""COCO RLE encoding: the runtime's numpy encoder vs pycocotools, same masks, interleaved.

    python docs/measure/rle_encode.py

Masks at Cityscapes size (1024x2048): a car-sized box, a person-sized box, a
blob with a ragged edge, and an empty mask; p50 ms of 30 calls each, 3 rounds.
"""

import sys
import time

import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, ".")  # from the repository root
from keras_solo.runtime.detections import encode_rle  # noqa: E402

h, w = 1024, 2048
masks = {}
masks["car 300x600"] = np.zeros((h, w), bool)
masks["car 300x600"][500:800, 700:1300] = True
masks["person 200x60"] = np.zeros((h, w), bool)
masks["person 200x60"][400:600, 100:160] = True
yy, xx = np.mgrid[0:h, 0:w]
rng = np.random.default_rng(0)
masks["ragged blob r~250"] = ((yy - 500) ** 2 + (xx - 900) ** 2) ** 0.5 < 250 + 8 * rng.standard_normal((h, w))
masks["empty"] = np.zeros((h, w), bool)


def p50(fn, mask, runs=30):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(mask)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def pycoco(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


for name, mask in masks.items():
    assert encode_rle(mask) == pycoco(mask), name
    rows = [(p50(encode_rle, mask), p50(pycoco, mask)) for _ in range(3)]
    ours, theirs = np.median(rows, axis=0)
    print(f"{name:20s} numpy {ours:6.2f} ms   pycocotools {theirs:6.2f} ms   ratio {ours / theirs:.2f}")
