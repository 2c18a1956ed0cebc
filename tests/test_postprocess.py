"""Known-answer tests for keras_solo.postprocess."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_solo.runtime import detections as det
from keras_solo import postprocess as pp


def _np(x):
    return ops.convert_to_numpy(x)


def _solo_matrix_nms(seg_masks, cate_labels, cate_scores, kernel="gaussian", sigma=2.0):
    """Direct numpy transcription of SOLO's matrix_nms (inputs sorted by score)."""
    n_samples = len(cate_labels)
    sum_masks = seg_masks.sum((1, 2)).astype(np.float64)
    seg_masks = seg_masks.reshape(n_samples, -1).astype(np.float64)
    inter_matrix = seg_masks @ seg_masks.T
    sum_masks_x = np.broadcast_to(sum_masks, (n_samples, n_samples))
    iou_matrix = np.triu(inter_matrix / (sum_masks_x + sum_masks_x.T - inter_matrix), k=1)
    cate_labels_x = np.broadcast_to(cate_labels, (n_samples, n_samples))
    label_matrix = np.triu((cate_labels_x == cate_labels_x.T).astype(np.float64), k=1)
    compensate_iou = (iou_matrix * label_matrix).max(0)
    compensate_iou = np.broadcast_to(compensate_iou, (n_samples, n_samples)).T
    decay_iou = iou_matrix * label_matrix
    if kernel == "gaussian":
        decay_matrix = np.exp(-1 * sigma * (decay_iou**2))
        compensate_matrix = np.exp(-1 * sigma * (compensate_iou**2))
        decay_coefficient = (decay_matrix / compensate_matrix).min(0)
    else:
        decay_matrix = (1 - decay_iou) / (1 - compensate_iou)
        decay_coefficient = decay_matrix.min(0)
    return cate_scores * decay_coefficient


def _reference_unsorted(masks, labels, scores, **kwargs):
    """SOLO's matrix_nms on unsorted input: sort, apply, map back to input order."""
    order = np.argsort(-scores, kind="stable")
    out = np.empty_like(scores, dtype=np.float64)
    out[order] = _solo_matrix_nms(masks[order], labels[order], scores[order], **kwargs)
    return out


def _nms(masks, labels, scores, valid=None, **kwargs):
    masks = np.asarray(masks, np.float32)[None]
    labels = np.asarray(labels, np.int32)[None]
    scores = np.asarray(scores, np.float32)[None]
    valid = np.ones_like(scores, bool) if valid is None else np.asarray(valid, bool)[None]
    return _np(pp.matrix_nms(masks, labels, scores, valid, **kwargs))[0]


def _box_mask(h, w, y1, x1, y2, x2):
    mask = np.zeros((h, w), np.float32)
    mask[y1:y2, x1:x2] = 1.0
    return mask


def test_duplicate_decays_by_kernel_factor_others_untouched():
    a = _box_mask(16, 16, 0, 0, 8, 8)  # area 64
    b = _box_mask(16, 16, 0, 4, 8, 12)  # overlaps a by 32 -> iou 32 / 96
    far = _box_mask(16, 16, 10, 10, 16, 16)
    masks = np.stack([a, b, far, b])
    labels = [0, 0, 0, 1]  # last: overlaps a but another class
    scores = [0.9, 0.8, 0.7, 0.6]
    iou = 32.0 / 96.0
    out = _nms(masks, labels, scores, kernel="gaussian", sigma=2.0)
    np.testing.assert_allclose(out, [0.9, 0.8 * np.exp(-2.0 * iou**2), 0.7, 0.6], rtol=1e-6)
    out = _nms(masks, labels, scores, kernel="linear")
    np.testing.assert_allclose(out, [0.9, 0.8 * (1 - iou), 0.7, 0.6], rtol=1e-6)


def test_input_order_does_not_matter():
    a = _box_mask(16, 16, 0, 0, 8, 8)
    b = _box_mask(16, 16, 0, 4, 8, 12)
    iou = 32.0 / 96.0
    # The lower-scored duplicate comes first in the input; it is still the one decayed.
    out = _nms(np.stack([b, a]), [2, 2], [0.5, 0.9])
    np.testing.assert_allclose(out, [0.5 * np.exp(-2.0 * iou**2), 0.9], rtol=1e-6)


def test_compensation_chain_matches_numpy():
    # a > b > c by score; b overlaps a strongly, c overlaps b strongly and a weakly.
    a = _box_mask(16, 24, 0, 0, 8, 8)
    b = _box_mask(16, 24, 0, 3, 8, 11)
    c = _box_mask(16, 24, 0, 7, 8, 15)
    masks = np.stack([a, b, c])
    labels = np.array([1, 1, 1])
    scores = np.array([0.9, 0.8, 0.7])
    for kernel in ("gaussian", "linear"):
        expected = _solo_matrix_nms(masks, labels, scores, kernel=kernel)
        out = _nms(masks, labels, scores, kernel=kernel)
        np.testing.assert_allclose(out, expected, rtol=1e-5)
    # By hand: b is decayed by a (no compensation for the top one); c's overlap
    # with b is compensated by b's own overlap with a, so only a decays c.
    iou_ab, iou_ac, iou_bc = 40.0 / 88.0, 8.0 / 120.0, 32.0 / 96.0
    out = _nms(masks, labels, scores)
    expected_c = 0.7 * min(1.0, np.exp(-2 * iou_ac**2), np.exp(-2 * (iou_bc**2 - iou_ab**2)))
    np.testing.assert_allclose(out[1], 0.8 * np.exp(-2 * iou_ab**2), rtol=1e-5)
    np.testing.assert_allclose(out[2], expected_c, rtol=1e-5)
    assert out[2] > 0.7 * np.exp(-2 * iou_bc**2) + 1e-3  # compensation mattered


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_matrix_nms_matches_solo_on_random_masks(kernel):
    rng = np.random.default_rng(0)
    num, h, w = 24, 12, 12
    masks = np.zeros((num, h, w), np.float32)
    for n in range(num):  # random boxes so that overlaps are frequent
        y1, x1 = rng.integers(0, 8, size=2)
        y2, x2 = y1 + rng.integers(2, 6), x1 + rng.integers(2, 6)
        masks[n, y1:y2, x1:x2] = 1.0
        masks[n] *= rng.random((h, w)) > 0.2
        masks[n, y1, x1] = 1.0  # never empty
    labels = rng.integers(0, 3, size=num)
    scores = rng.random(num).astype(np.float32)
    expected = _reference_unsorted(masks, labels, scores.astype(np.float64), kernel=kernel)
    out = _nms(masks, labels, scores, kernel=kernel)
    assert (out < scores - 1e-3).sum() >= 5  # the case is not trivial
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_invalid_candidates_decay_nothing():
    a = _box_mask(16, 16, 0, 0, 8, 8)
    # Invalid exact duplicates, one scored above and one below the valid mask:
    # the valid one keeps its score, the invalid ones get 0.
    out = _nms(np.stack([a, a, a]), [0, 0, 0], [0.95, 0.9, 0.5], valid=[False, True, False])
    np.testing.assert_allclose(out, [0.0, 0.9, 0.0], rtol=1e-6)


def test_identical_masks_linear_kernel_is_finite():
    a = _box_mask(8, 8, 0, 0, 4, 4)
    out = _nms(np.stack([a, a, a]), [0, 0, 0], [0.9, 0.8, 0.7], kernel="linear")
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [0.9, 0.0, 0.0], atol=1e-6)


def test_select_candidates_picks_cell_class_pairs():
    probs = np.zeros((2, 5, 3), np.float32)
    probs[0, 4, 2] = 0.9
    probs[0, 1, 0] = 0.5
    probs[0, 3, 1] = 0.05  # below score_thr
    probs[1, 2, 1] = 0.7
    scores, labels, cells, valid = pp.select_candidates(probs, score_thr=0.1, k=3)
    np.testing.assert_allclose(_np(scores)[0], [0.9, 0.5, 0.05])
    np.testing.assert_array_equal(_np(labels)[0], [2, 0, 1])
    np.testing.assert_array_equal(_np(cells)[0], [4, 1, 3])
    np.testing.assert_array_equal(_np(valid), [[True, True, False], [True, False, False]])
    np.testing.assert_array_equal(_np(cells)[1, 0], 2)
    np.testing.assert_array_equal(_np(labels)[1, 0], 1)
    assert str(_np(labels).dtype) == "int32" and str(_np(cells).dtype) == "int32"
    # k above N_cells * C pads with invalid entries.
    scores, labels, cells, valid = pp.select_candidates(probs, score_thr=0.1, k=20)
    assert _np(scores).shape == (2, 20) and not _np(valid)[:, 15:].any()


def test_points_nms_keeps_local_maxima():
    probs = np.zeros((1, 3, 3, 1), np.float32)
    probs[0, 0, 0, 0] = 0.8
    probs[0, 1, 1, 0] = 0.6  # up-left neighbour is larger -> suppressed
    probs[0, 2, 0, 0] = 0.7  # neighbours up (0) -> kept
    probs[0, 0, 2, 0] = 0.3  # left neighbour 0 -> kept
    out = _np(pp.points_nms(probs))[0, :, :, 0]
    expected = np.zeros((3, 3), np.float32)
    expected[0, 0], expected[2, 0], expected[0, 2] = 0.8, 0.7, 0.3
    np.testing.assert_allclose(out, expected)


def test_maskness_of_hand_made_mask():
    probs = np.zeros((1, 2, 4, 4), np.float32)
    probs[0, 0, 0, :3] = [0.9, 0.7, 0.6]  # binary area 3, maskness 0.7333
    probs[0, 0, 1, 0] = 0.4  # below mask_thr: not counted
    probs[0, 1, 0, 0] = 0.9  # area 1: dropped by min_area=1
    binary, scores, valid, areas = pp.maskness_rescore(
        probs,
        np.array([[0.5, 0.8]], np.float32),
        np.array([[True, True]]),
        mask_thr=0.5,
        min_area=1,
    )
    np.testing.assert_allclose(_np(scores), [[0.5 * (0.9 + 0.7 + 0.6) / 3, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(_np(valid), [[True, False]])
    np.testing.assert_array_equal(_np(areas), [[3.0, 1.0]])
    assert _np(binary)[0, 0].sum() == 3.0


def _decode_inputs():
    mask_probs = np.zeros((2, 4, 8, 8), np.float32)
    mask_probs[0, 0, :4, :4] = 0.9
    mask_probs[0, 1, :4, :4] = 0.8  # duplicate of 0, same class
    mask_probs[0, 2, 4:, 4:] = 0.7
    scores = np.array([[0.9, 0.85, 0.6, 0.3], [0.5, 0.4, 0.3, 0.2]], np.float32)
    labels = np.array([[1, 1, 2, 0], [0, 0, 0, 0]], np.int32)
    valid = np.array([[True, True, True, False], [True, True, True, True]])
    return mask_probs, scores, labels, valid


def test_decode_known_result_and_static_shapes():
    mask_probs, scores, labels, valid = _decode_inputs()
    out = pp.SOLODecoder(max_per_img=6)(mask_probs, scores, labels, valid)
    out = {key: _np(value) for key, value in out.items()}
    assert out["masks"].shape == (2, 6, 8, 8) and out["scores"].shape == (2, 6)
    # Duplicate decays by exp(-2 * 1^2) below update_thr? 0.85*0.8*exp(-2) = 0.092 -> kept.
    expected = sorted([0.9 * 0.9, 0.85 * 0.8 * np.exp(-2.0), 0.6 * 0.7], reverse=True)
    np.testing.assert_allclose(out["scores"][0, :3], expected, rtol=1e-5)
    np.testing.assert_array_equal(out["labels"][0], [1, 2, 1, -1, -1, -1])
    np.testing.assert_array_equal(out["index"][0, :3], [0, 2, 1])
    np.testing.assert_array_equal(out["valid"][0], [True] * 3 + [False] * 3)
    np.testing.assert_allclose(out["masks"][0, 1], mask_probs[0, 2])
    assert out["masks"][0, 3:].sum() == 0
    # Image 1 has empty masks only: nothing survives, shapes stay static.
    assert not out["valid"][1].any() and out["scores"][1].sum() == 0
    assert (out["labels"][1] == -1).all()


@pytest.mark.parametrize("pool", [2, 4])
def test_decode_nms_pool_exact_on_block_aligned_masks(pool):
    """Masks made of whole pooling blocks: pooled IoUs are the exact ones."""
    mask_probs, scores, labels, valid = _decode_inputs()  # 4x4 blocks
    exact = {k: _np(v) for k, v in pp.SOLODecoder(max_per_img=6)(mask_probs, scores, labels, valid).items()}
    pooled = {k: _np(v) for k, v in pp.SOLODecoder(max_per_img=6, nms_pool=pool)(
        mask_probs, scores, labels, valid).items()}
    for key in exact:
        np.testing.assert_allclose(pooled[key], exact[key], rtol=1e-6)
    assert pooled["masks"].shape == (2, 6, 8, 8)  # the masks returned stay at full size


def test_decode_nms_pool_small_masks_still_suppress():
    """A duplicate smaller than a pooling block still decays (fractions, not a threshold)."""
    mask_probs = np.zeros((1, 3, 8, 8), np.float32)
    mask_probs[0, 0, 1, 1] = 0.9  # one pixel: a quarter of its 2x2 block
    mask_probs[0, 1, 1, 1] = 0.8  # its duplicate
    mask_probs[0, 2, 6, 6] = 0.7  # elsewhere
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    labels = np.zeros((1, 3), np.int32)
    valid = np.ones((1, 3), bool)
    exact = _np(pp.SOLODecoder(max_per_img=3)(mask_probs, scores, labels, valid)["scores"])
    pooled = _np(pp.SOLODecoder(max_per_img=3, nms_pool=2)(mask_probs, scores, labels, valid)["scores"])
    np.testing.assert_allclose(pooled, exact, rtol=1e-6)
    assert exact[0, 2] < 0.8 * 0.8 * 0.2  # the duplicate is the one decayed (exp(-2))
    with pytest.raises(ValueError, match="nms_pool"):
        pp.SOLODecoder(nms_pool=3)(mask_probs, scores, labels, valid)


def test_decode_empty_and_under_tf_function():
    mask_probs, scores, labels, valid = _decode_inputs()

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, 4, 8, 8), tf.float32),
            tf.TensorSpec((None, 4), tf.float32),
            tf.TensorSpec((None, 4), tf.int32),
            tf.TensorSpec((None, 4), tf.bool),
        ]
    )
    def run(m, s, l, v):
        return pp.SOLODecoder(max_per_img=3)(m, s, l, v)

    out = run(mask_probs, scores, labels, valid)
    eager = pp.SOLODecoder(max_per_img=3)(mask_probs, scores, labels, valid)
    for key in eager:
        np.testing.assert_allclose(_np(out[key]), _np(eager[key]), rtol=1e-6)
    # Nothing valid at all.
    out = run(mask_probs, scores, labels, np.zeros_like(valid))
    assert tuple(out["masks"].shape) == (2, 3, 8, 8)
    assert not _np(out["valid"]).any()


def test_masks_to_original_undoes_letterbox():
    orig_h, orig_w = 50, 80
    input_h, input_w = 64, 128
    scale = min(input_w / orig_w, input_h / orig_h)  # 1.28
    original = np.zeros((orig_h, orig_w), bool)
    original[10:30, 40:70] = True
    # The object in the letterboxed input, at mask stride 4 (16 x 32 masks).
    letterboxed = np.zeros((input_h, input_w), np.float32)
    letterboxed[round(10 * scale) : round(30 * scale), round(40 * scale) : round(70 * scale)] = 1.0
    probs = letterboxed.reshape(16, 4, 32, 4).mean(axis=(1, 3))[None]
    out = det.masks_to_original(
        probs, input_size=(input_h, input_w), image_info=(orig_h, orig_w, scale, 7.0)
    )
    assert out.shape == (1, orig_h, orig_w) and out.dtype == bool
    iou = (out[0] & original).sum() / (out[0] | original).sum()
    assert iou > 0.9
    empty = det.masks_to_original(
        np.zeros((0, 16, 32)), input_size=(64, 128), image_info=(50, 80, scale, 0)
    )
    assert empty.shape == (0, 50, 80)


def test_masks_to_original_boxes_equal_a_scan_of_the_full_masks():
    rng = np.random.default_rng(5)
    probs = np.zeros((6, 16, 32), np.float32)
    for n in range(5):  # blobs of random size and place; the last mask stays empty
        y, x = rng.integers(0, 12), rng.integers(0, 26)
        probs[n, y : y + rng.integers(1, 5), x : x + rng.integers(1, 7)] = rng.uniform(0.55, 1.0)
    masks, boxes = det.masks_to_original(probs, input_size=(64, 128), image_info=(90, 170, 0.75),
                                         return_boxes=True)
    np.testing.assert_array_equal(boxes, det.boxes_from_masks(masks))
    assert (boxes[5] == 0).all() and (boxes[:5, 2] > boxes[:5, 0]).all()


def test_boxes_from_masks():
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    np.testing.assert_array_equal(det.boxes_from_masks(masks), [[3, 2, 9, 5], [0, 0, 0, 0]])


def test_overlay_names_keep_sources_with_one_stem_apart():
    names = det.overlay_names(["d/a.png", "d/a.JPG", "d/b.png", "e/c.jpg"])
    assert names == ["a_png.jpg", "a_jpg.jpg", "b.jpg", "c.jpg"]
    assert len(set(names)) == len(names)


def _jpeg_with_exif_orientation(path, image, orientation):
    """A JPEG whose APP1 EXIF says `orientation` (cv2 writes none; one IFD entry, tag 0x0112)."""
    import struct

    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHII", 0x0112, 3, 1, orientation) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    data = data.tobytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])


def test_one_exif_policy_train_evaluate_predict_runner(tmp_path):
    """A JPEG with EXIF orientation 6 reads as its stored pixels (it used to be rotated by predict
    and the runner only). One reader serves the training data, evaluation, predict and the runtime."""
    import cv2

    from keras_solo.data import coco
    from keras_solo.runtime import bench, image as runtime_image, stream

    image = np.zeros((40, 100, 3), np.uint8)
    image[:, :20] = 255  # stored: 40 rows x 100 columns, bright left edge
    path = tmp_path / "rotated.jpg"
    _jpeg_with_exif_orientation(path, image, 6)
    assert cv2.imread(str(path)).shape[:2] == (100, 40)  # what plain cv2.imread does with the tag
    assert coco.read_image is stream.read_image is bench.read_image is runtime_image.read_image
    got = runtime_image.read_image(str(path))
    assert got.shape == (40, 100, 3)
    assert got[:, :20].mean() > 200 and got[:, 40:].mean() < 50  # not rotated


def test_rle_encoding_matches_pycocotools():
    """The numpy COCO RLE string (no pycocotools on a device) == pycocotools' for any mask."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 7), (9, 1), (3000, 2), (0, 4)] + [tuple(rng.integers(1, 70, 2)) for _ in range(200)]
    for i, (h, w) in enumerate(shapes):
        mask = rng.random((h, w)) < rng.random()
        if i % 3 == 0:  # a blob: long runs (multi-group counts, negative deltas)
            mask[:] = False
            mask[rng.integers(0, h):, rng.integers(0, w):] = True
        elif i % 3 == 1:  # sparse: empty columns on both sides of the scanned ones
            mask &= rng.random((h, w)) < 0.05
            mask[:, : w // 3] = mask[:, 2 * w // 3 + 1:] = False
        want = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        got = det.encode_rle(mask)
        assert got == {"size": [int(h), int(w)], "counts": want["counts"].decode("ascii")}, (h, w)


def test_draw_overlay_blends_inside_the_mask_only():
    image = np.full((60, 80, 3), 100, np.uint8)
    masks = np.zeros((1, 60, 80), bool)
    masks[0, 20:40, 30:50] = True
    found = {"scores": np.array([0.9]), "labels": np.array([0]), "masks": masks,
             "boxes": np.array([[30, 20, 20, 20]], np.float32)}
    out = det.draw_overlay(image, found, ["car"], alpha=0.5)
    colour = np.array(det.instance_colour(0))
    inner = out[25:35, 35:45].reshape(-1, 3)  # inside the mask, away from contour and label
    np.testing.assert_allclose(inner, np.broadcast_to((100 + colour) / 2, inner.shape), atol=1)
    assert (out[45:, :] == 100).all() and (out[21:, 55:] == 100).all()  # outside the box (and label): untouched
    assert (image == 100).all()  # the input is not modified
