"""cProfile of load_example on 40 Cityscapes train frames at the edge preset's 640x320: python docs/measure/load_example_profile.py [CONFIG] (another preset's input size: training/solo_r50_attention.yaml, 1344x672)."""
import cProfile, pstats, sys, time
from keras_solo import builders
from keras_solo.config import load_config
from keras_solo.data.pipeline import load_example
cfg = load_config(sys.argv[1] if len(sys.argv) > 1 else "training/edge.yaml",
                  ["data.train_images=../shared/data/cityscapes5"])
coco = builders.load_split(cfg, "train")
kw = builders.dataset_kwargs(cfg, True); kw.pop("size_divisor")
load_example(coco, 0, **kw)
t = time.perf_counter()
pr = cProfile.Profile(); pr.enable()
for i in range(40): load_example(coco, i, **kw)
pr.disable()
print("ms/img", (time.perf_counter() - t) / 40 * 1000)
pstats.Stats(pr).sort_stats("tottime").print_stats(14)
