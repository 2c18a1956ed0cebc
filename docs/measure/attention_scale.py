"""Size of the grid-attention logits at initialisation vs the mask branch's.

For the edge preset on two Cityscapes training frames, per level: the mask
branch's logits (1x1 kernel columns of 16 evenly spaced cells) and the
attention branch's logits for the same cells, with the
grid vectors normalised three ways (`model.attention_normalize`: none,
vector, image), ImageNet vs random backbone.

    python docs/measure/attention_scale.py   (needs data/cityscapes5, see RESULTS.md)
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_solo import builders  # noqa: E402
from keras_solo.config import load_config  # noqa: E402


def main():
    print("| backbone | normalize | level (S) | mask logits std | attention logits mean / std / max | V std |")
    print("|---|---|---|---|---|---|")
    for weights in ("imagenet", "none"):
        for normalize in ("none", "vector", "image"):
            keras.utils.set_random_seed(0)
            config = load_config("training/edge.yaml", [f"model.backbone_weights={weights}",
                                                         f"model.attention_normalize={normalize}"])
            model = builders.build_model(config)
            dataset = builders.build_dataset(config, builders.load_split(config, "train"), training=False,
                                             batch_size=2)
            images, _ = next(iter(dataset))
            outputs = model(images, training=False)
            for level, grid in enumerate(model.grids):
                cells = np.arange(0, grid * grid, max(1, grid * grid // 16), dtype="int32")
                cells = np.tile(cells[None], (images.shape[0], 1))
                mask = keras.ops.convert_to_numpy(
                    model.mask_kernels[level].gather_logits(outputs[f"mask_features_{level}"], cells))
                attention = keras.ops.convert_to_numpy(model.attentions[level].gather_logits(
                    outputs[f"grid_embed_{level}"], cells, out_size=model.mask_sizes[level]))
                vectors = keras.ops.convert_to_numpy(outputs[f"grid_embed_{level}"])
                print(f"| {weights} | {normalize} | {level} ({grid}) | {mask.std():.2f} | "
                      f"{attention.mean():.2f} / {attention.std():.2f} / {attention.max():.1f} | {vectors.std():.3g} |")


if __name__ == "__main__":
    main()
