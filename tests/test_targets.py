"""SOLO target assignment: known cells for hand-placed objects.

Images are 64x64 px, masks at stride 2 (32x32). With S = 4 a cell is 16 px,
with S = 8 it is 8 px; cell k = i * S + j (i = row).
"""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_solo.targets import build_targets, scale_ranges_for_input

SIZE = 64
MS = 2
WIDE = ((0.0, 1000.0),)


def rect(y0, y1, x0, x1):
    """Full-resolution (64, 64) mask of a rectangle in input px."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def make_batch(images, max_instances=4, crowd=None):
    """images: list (per image) of lists of (full-res mask, class).

    Returns masks (B, M, 32, 32) uint8, classes (B, M), boxes (B, M, 4) from
    the mask extents, ignore (B, 32, 32).
    """
    batch = len(images)
    masks = np.zeros((batch, max_instances, SIZE // MS, SIZE // MS), np.uint8)
    classes = np.full((batch, max_instances), -1, np.int32)
    boxes = np.zeros((batch, max_instances, 4), np.float32)
    for b, instances in enumerate(images):
        for m, (mask, label) in enumerate(instances):
            masks[b, m] = mask[::MS, ::MS]
            classes[b, m] = label
            ys, xs = np.nonzero(mask)
            if len(ys):
                boxes[b, m] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    ignore = np.zeros((batch, SIZE // MS, SIZE // MS), np.uint8)
    if crowd is not None:
        ignore[:] = crowd[::MS, ::MS]
    return masks, classes, boxes, ignore


def targets_for(images, *, grids=(4,), scale_ranges=WIDE, mask_sizes=None, sigma=0.2,
                max_positives=16, crowd=None, max_instances=4):
    masks, classes, boxes, ignore = make_batch(images, max_instances, crowd)
    mask_sizes = mask_sizes or [(SIZE // MS, SIZE // MS)] * len(grids)
    levels = build_targets(
        masks, classes, boxes, ignore, input_size=(SIZE, SIZE), mask_stride=MS, grids=grids,
        mask_sizes=mask_sizes, scale_ranges=scale_ranges, center_sigma=sigma,
        max_positives=max_positives, num_classes=3)
    return [{k: ops.convert_to_numpy(v) for k, v in level.items()} for level in levels]


def positive_cells(level, b=0):
    return sorted(np.nonzero(level["cate_target"][b].reshape(-1) >= 0)[0].tolist())


def test_scale_ranges_for_input():
    scaled = scale_ranges_for_input(((1, 96), (48, 192)), (672, 1344))
    np.testing.assert_allclose(scaled, ((0.84, 80.64), (40.32, 161.28)))
    assert scale_ranges_for_input(input_size=(1600, 800), reference_size=800)[4] == (384.0, 2048.0)


def test_square_lands_in_its_centre_cell():
    # 16x16 square, centre of mass (y, x) = (12, 28) -> cell (0, 1), k = 1.
    level = targets_for([[(rect(4, 20, 20, 36), 2)]])[0]
    assert positive_cells(level) == [1]
    assert level["cate_target"][0, 0, 1] == 2
    assert level["pos_index"][0].tolist() == [1] + [0] * 15
    assert level["pos_valid"][0].tolist() == [1.0] + [0.0] * 15
    assert np.all(level["cate_weight"] == 1.0)


def test_centre_region_grows_with_sigma():
    # sigma = 1: half sizes 8 px -> rows floor(4/16)..floor(20/16) = 0..1,
    # cols floor(20/16)..floor(36/16) = 1..2.
    level = targets_for([[(rect(4, 20, 20, 36), 0)]], sigma=1.0)[0]
    assert positive_cells(level) == [1, 2, 5, 6]
    assert level["pos_index"][0, :4].tolist() == [1, 2, 5, 6]


def test_centre_region_is_at_most_3x3():
    # 48x48 square, centre 28 -> cell 3 of 8; sigma = 1 reaches rows 0..6 but
    # SOLO clamps to coord -1 .. coord + 1 = 2..4.
    level = targets_for([[(rect(4, 52, 4, 52), 1)]], grids=(8,), sigma=1.0)[0]
    expected = [i * 8 + j for i in (2, 3, 4) for j in (2, 3, 4)]
    assert positive_cells(level) == expected
    assert np.all(level["cate_target"][0].reshape(-1)[expected] == 1)


def test_too_large_object_gets_no_cell_and_overlap_trains_two_levels():
    small = (rect(4, 20, 20, 36), 0)   # scale 16: in both (0, 20) and (16, 64)
    large = (rect(4, 52, 4, 52), 1)    # scale 48: only in (16, 64)
    ranges = ((0.0, 20.0), (16.0, 64.0))
    only_large = targets_for([[large]], grids=(4, 8), scale_ranges=ranges)
    assert positive_cells(only_large[0]) == []
    assert only_large[0]["pos_valid"].sum() == 0
    assert np.all(only_large[0]["mask_target"] == 0)
    # S = 8: centre 28 -> cell 3; half 4.8 px -> rows/cols floor(23.2/8)..floor(32.8/8) = 2..4.
    assert positive_cells(only_large[1]) == [i * 8 + j for i in (2, 3, 4) for j in (2, 3, 4)]
    only_small = targets_for([[small]], grids=(4, 8), scale_ranges=ranges)
    assert positive_cells(only_small[0]) == [1]
    # S = 8: centre (12, 28) -> cell (1, 3); half 1.6 px stays in it.
    assert positive_cells(only_small[1]) == [1 * 8 + 3]


def test_centre_of_mass_not_box_centre_decides_the_cell():
    # An L: a 10-px wide bar x 0..10, y 0..48, plus a thin arm y 44..48 to x 48.
    # Box centre (24, 24) -> cell (1, 1) = 5; centre of mass
    # (y, x) = (29.3, 10.8) -> cell (1, 0) = 4.
    shape = np.maximum(rect(0, 48, 0, 10), rect(44, 48, 10, 48))
    level = targets_for([[(shape, 0)]], sigma=0.05)[0]
    assert positive_cells(level) == [4]


@pytest.mark.parametrize("small_first", [True, False])
def test_smaller_claimant_wins_a_shared_cell(small_first):
    # Big 48x48, centre 28 -> cells 5, 6, 9, 10; small 8x8, centre 26 -> cell 5.
    big = (rect(4, 52, 4, 52), 1)
    small = (rect(22, 30, 22, 30), 2)
    instances = [small, big] if small_first else [big, small]
    level = targets_for([instances])[0]
    assert positive_cells(level) == [5, 6, 9, 10]
    cate = level["cate_target"][0].reshape(-1)
    assert cate[5] == 2 and cate[6] == cate[9] == cate[10] == 1
    np.testing.assert_array_equal(level["mask_target"][0, 0], small[0][::MS, ::MS])
    np.testing.assert_array_equal(level["mask_target"][0, 1], big[0][::MS, ::MS])


def test_crowd_region_zeroes_weight_of_non_positive_cells():
    crowd = rect(0, 32, 32, 64)  # top-right quadrant: cells 2, 3, 6, 7
    # Object centre (12, 44) -> cell (0, 2) = 2, inside the crowd region.
    level = targets_for([[(rect(4, 20, 36, 52), 0)]], crowd=crowd)[0]
    assert positive_cells(level) == [2]
    weight = level["cate_weight"][0].reshape(-1)
    assert weight[2] == 1.0
    assert weight[[3, 6, 7]].tolist() == [0.0, 0.0, 0.0]
    assert weight.sum() == 16 - 3


def test_padding_and_empty_masks_give_nothing():
    square = rect(4, 20, 20, 36)
    empty = np.zeros_like(square)
    level = targets_for([[(square, -1), (empty, 0)]])[0]
    assert positive_cells(level) == []
    assert np.all(level["cate_target"] == -1)
    assert level["pos_valid"].sum() == 0 and np.all(level["pos_index"] == 0)
    assert np.all(level["mask_target"] == 0)


def test_batch_images_are_independent():
    a = (rect(4, 20, 20, 36), 0)    # cell 1
    b = (rect(36, 52, 4, 20), 2)    # centre (44, 12) -> cell (2, 0) = 8
    level = targets_for([[a], [], [b]])[0]
    assert positive_cells(level, 0) == [1]
    assert positive_cells(level, 1) == []
    assert positive_cells(level, 2) == [8]
    np.testing.assert_array_equal(level["mask_target"][2, 0], b[0][::MS, ::MS])
    assert np.all(level["mask_target"][1] == 0)


def test_mask_target_is_the_resized_mask():
    # Level 0 keeps the 32x32 mask; level 1 halves it (bilinear at half-pixel
    # centres = mean of 2x2 blocks, then >= 0.5). Odd edges give half blocks.
    shape = rect(6, 18, 22, 34)  # mask rows 3..8, cols 11..16 at stride 2
    levels = targets_for([[(shape, 1)]], grids=(4, 4), mask_sizes=[(32, 32), (16, 16)],
                         scale_ranges=WIDE * 2)
    stride2 = shape[::MS, ::MS].astype(np.float32)
    np.testing.assert_array_equal(levels[0]["mask_target"][0, 0], stride2)
    blocks = stride2.reshape(16, 2, 16, 2).mean(axis=(1, 3))
    expected = (blocks >= 0.5).astype(np.float32)
    np.testing.assert_array_equal(levels[1]["mask_target"][0, 0], expected)
    assert expected.sum() == 4 * 4 - 4  # rows 1..4, cols 5..8 less the quarter-covered corners
    assert np.all(levels[1]["mask_target"][0, 1:] == 0)


def test_positives_beyond_cap_keep_ascending_first():
    level = targets_for([[(rect(4, 52, 4, 52), 1)]], grids=(8,), sigma=1.0, max_positives=4)[0]
    assert level["pos_index"][0].tolist() == [18, 19, 20, 26]
    assert level["pos_valid"][0].tolist() == [1.0] * 4
    assert len(positive_cells(level)) == 9  # the category grid keeps all


def test_static_shapes_under_tf_function():
    masks, classes, boxes, ignore = make_batch(
        [[(rect(4, 20, 20, 36), 0)], [(rect(4, 52, 4, 52), 1)]])
    kwargs = dict(input_size=(SIZE, SIZE), mask_stride=MS, grids=(4, 3),
                  mask_sizes=[(32, 32), (16, 16)], scale_ranges=((0, 40), (30, 100)),
                  max_positives=(5, 9), num_classes=3)
    specs = [tf.TensorSpec((None,) + a.shape[1:], tf.as_dtype(a.dtype))
             for a in (masks, classes, boxes, ignore)]
    traced = tf.function(lambda *args: build_targets(*args, **kwargs), input_signature=specs)
    concrete = traced.get_concrete_function()
    for level, (grid, cap, size) in enumerate(zip((4, 3), (5, 9), ((32, 32), (16, 16)))):
        shapes = {k: tuple(v.shape[1:]) for k, v in concrete.structured_outputs[level].items()}
        assert shapes == {"cate_target": (grid, grid), "cate_weight": (grid, grid), "pos_index": (cap,),
                          "pos_valid": (cap,), "mask_target": (cap,) + size}
    graph = traced(masks, classes, boxes, ignore)
    eager = build_targets(masks, classes, boxes, ignore, **kwargs)
    for g, e in zip(graph, eager):
        for key in e:
            np.testing.assert_array_equal(g[key].numpy(), ops.convert_to_numpy(e[key]))
    assert graph[0]["cate_target"].dtype == tf.int32 and graph[0]["pos_index"].dtype == tf.int32
    assert graph[0]["mask_target"].dtype == tf.float32


def test_mismatched_mask_size_raises():
    masks, classes, boxes, ignore = make_batch([[]])
    with pytest.raises(ValueError, match="mask_stride"):
        build_targets(masks, classes, boxes, ignore, input_size=(64, 64), mask_stride=4, grids=(4,),
                      mask_sizes=[(16, 16)], scale_ranges=WIDE, num_classes=3)


def reference_targets(masks, classes, boxes, *, grid, lo, hi, sigma):
    """SOLO's per-instance loop (mmdet `_get_targets_single`) in numpy, with
    smaller-box-wins conflicts instead of last-wins. Returns (B, S*S) labels."""
    batch = masks.shape[0]
    labels = np.full((batch, grid * grid), -1)
    owner_area = np.full((batch, grid * grid), np.inf)
    for b in range(batch):
        for m in range(masks.shape[1]):
            x1, y1, x2, y2 = boxes[b, m]
            scale = np.sqrt((x2 - x1) * (y2 - y1))
            if classes[b, m] < 0 or masks[b, m].sum() == 0 or not lo <= scale <= hi:
                continue
            ys, xs = np.nonzero(masks[b, m])
            cy, cx = (ys.mean() + 0.5) * MS, (xs.mean() + 0.5) * MS
            half_h, half_w = 0.5 * sigma * (y2 - y1), 0.5 * sigma * (x2 - x1)
            ci, cj = int(cy / SIZE * grid), int(cx / SIZE * grid)
            top = max(int(np.floor((cy - half_h) / SIZE * grid)), ci - 1, 0)
            down = min(int(np.floor((cy + half_h) / SIZE * grid)), ci + 1, grid - 1)
            left = max(int(np.floor((cx - half_w) / SIZE * grid)), cj - 1, 0)
            right = min(int(np.floor((cx + half_w) / SIZE * grid)), cj + 1, grid - 1)
            for i in range(top, down + 1):
                for j in range(left, right + 1):
                    k = i * grid + j
                    area = (x2 - x1) * (y2 - y1)
                    if area < owner_area[b, k]:
                        owner_area[b, k], labels[b, k] = area, classes[b, m]
    return labels


def test_matches_solo_loop_on_random_boxes():
    # sigma avoids exact cell boundaries, where floor() depends on rounding.
    rng = np.random.default_rng(0)
    images = []
    for _ in range(3):
        instances = []
        for _ in range(6):
            y0, x0 = rng.integers(0, 28, size=2) * 2
            h, w = rng.integers(1, 18, size=2) * 2
            instances.append((rect(y0, y0 + h, x0, x0 + w), int(rng.integers(0, 3))))
        images.append(instances)
    masks, classes, boxes, _ = make_batch(images, max_instances=6)
    for grid, (lo, hi) in ((5, (0, 24)), (7, (12, 60))):
        level = targets_for(images, grids=(grid,), scale_ranges=((lo, hi),), sigma=0.618034,
                            max_positives=grid * grid, max_instances=6)[0]
        expected = reference_targets(masks, classes, boxes, grid=grid, lo=lo, hi=hi, sigma=0.618034)
        np.testing.assert_array_equal(level["cate_target"].reshape(3, -1), expected)
        for b in range(3):
            cells = np.nonzero(expected[b] >= 0)[0]
            assert level["pos_index"][b, :len(cells)].tolist() == cells.tolist()
            assert level["pos_valid"][b].sum() == len(cells)
