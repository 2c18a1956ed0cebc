"""Cost of the runner's numpy decoding (undo letterbox + threshold) vs the number of detections.

Edge geometry: masks 80x160 (finest mask of 640x320), original image 1280x640.
"""
import sys, time
import numpy as np
sys.path.insert(0, ".")  # python docs/measure/decode_cost.py, from the repository root
from keras_solo.runtime.engine import Engine

engine = Engine("decode-only", input_size=(640, 320), mask_thr=0.5)
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:80, 0:160]
for n in (0, 10, 30, 100):
    masks = np.zeros((1, 100, 80, 160), np.float32)
    for i in range(n):  # blobs of random centre and size
        cy, cx, r = rng.uniform(10, 70), rng.uniform(10, 150), rng.uniform(3, 20)
        masks[0, i] = 1 / (1 + np.exp(((yy - cy) ** 2 + (xx - cx) ** 2) ** 0.5 - r))
    outputs = {"scores": np.r_[np.linspace(0.9, 0.2, n), np.zeros(100 - n)][None].astype(np.float32),
               "labels": np.zeros((1, 100), np.int32), "masks": masks,
               "valid": (np.arange(100) < n)[None]}
    times = []
    for _ in range(30):
        t = time.perf_counter()
        engine.decode(outputs, (640, 1280), 0.5)
        times.append(time.perf_counter() - t)
    print(f"{n:3d} detections: decode p50 {1000 * np.median(times):.2f} ms, min {1000 * min(times):.2f} ms")
