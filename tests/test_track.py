"""Tests for keras_solo.runtime.track (the tracker) and keras_solo.data.sequences
(synthetic videos with known identities). numpy only: no TensorFlow."""

import itertools
import json

import numpy as np
import pytest

from keras_solo.data.sequences import make_sequence, mot_metrics, perturb, read_mot, write_sequence
from keras_solo.errors import SoloError
from keras_solo.runtime.track import (CONFIRMED, LOST, TENTATIVE, Tracker, TrackerConfig, linear_assignment,
                                      mot_lines, track_record)

SHAPE = (64, 128)


def record(boxes, labels=None, scores=None, masks=None):
    """A detections record of boxes (x, y, w, h); masks fill the boxes unless given."""
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    if masks is None:
        masks = np.zeros((len(boxes),) + SHAPE, bool)
        for mask, (x, y, w, h) in zip(masks, boxes.astype(int)):
            mask[y:y + h, x:x + w] = True
    return {"scores": np.array(scores if scores is not None else [0.9] * len(boxes), np.float32),
            "labels": np.array(labels if labels is not None else [0] * len(boxes), np.int64),
            "boxes": boxes, "masks": np.asarray(masks, bool)}


def id_at(out, y):
    """The track ID of the reported box whose top edge is nearest to `y`."""
    return int(out["track_ids"][np.argmin(np.abs(out["boxes"][:, 1] - y))])


def _brute_force(cost, limit):
    """The least objective over every matching (partial when `limit` is given)."""
    n, m = cost.shape
    best = np.inf if limit is None else 0.0
    for choice in itertools.product(range(-1, m), repeat=n):
        pairs = [(i, j) for i, j in enumerate(choice) if j >= 0]
        if len({j for _, j in pairs}) != len(pairs):
            continue
        if limit is None and len(pairs) != min(n, m):
            continue
        if limit is not None and any(not cost[i, j] < limit for i, j in pairs):
            continue
        best = min(best, sum(cost[i, j] - (limit or 0.0) for i, j in pairs))
    return best


def test_linear_assignment_is_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n, m = rng.integers(1, 5, 2)
        # integer costs make ties and conflicting row minima, which the Hungarian path must solve
        cost = rng.integers(0, 4, (n, m)).astype(float) if trial % 2 else rng.random((n, m))
        limit = None if trial % 3 == 0 else (2.5 if trial % 2 else 0.6)
        if limit is not None and trial % 5 == 0:
            cost[rng.random((n, m)) < 0.3] = np.inf  # forbidden pairs
        rows, cols = linear_assignment(cost, limit)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert list(rows) == sorted(rows)
        if limit is None:
            assert len(rows) == min(n, m)
        else:
            assert np.all(cost[rows, cols] < limit)
        value = cost[rows, cols].sum() - (0.0 if limit is None else limit * len(rows))
        assert value == pytest.approx(_brute_force(cost, limit)), (cost, limit)


def test_linear_assignment_empty_and_rectangular():
    rows, cols = linear_assignment(np.zeros((0, 3)))
    assert rows.size == 0 and cols.size == 0
    rows, cols = linear_assignment(np.array([[5.0], [1.0], [3.0]]))
    assert rows.tolist() == [1] and cols.tolist() == [0]
    rows, cols = linear_assignment(np.array([[0.9, np.nan]]), limit=0.5)
    assert rows.size == 0


def test_identity_kept_through_a_dropped_frame_and_coasted():
    tracker = Tracker()
    seen = []
    for frame in range(12):
        x = 10 + 4 * frame  # 4 px per frame, to the right
        out = tracker.update(record([] if frame == 6 else [[x, 20, 16, 24]]))
        seen.append(out)
    assert all(len(out["track_ids"]) == 1 and out["track_ids"][0] == 1 for out in seen)
    coasted = seen[6]
    assert coasted["states"].tolist() == [LOST] and coasted["index"].tolist() == [-1]
    assert coasted["boxes"][0, 0] == pytest.approx(34, abs=1.5)  # the predicted place, not the last one (30)
    assert coasted["masks"][0].sum() == 16 * 24  # the last mask, moved with the box
    assert seen[7]["states"].tolist() == [CONFIRMED] and seen[7]["index"].tolist() == [0]


@pytest.mark.parametrize("iou", ["mask", "box"])
def test_two_crossing_objects_of_one_class_keep_their_ids(iou):
    tracker = Tracker(iou=iou)
    for frame in range(30):
        a, b = 10 + 4 * frame, 100 - 4 * frame  # they pass each other at frame 11, B 2 px lower
        out = tracker.update(record([[a, 20, 14, 24], [b, 22, 14, 24]]))
        assert (id_at(out, 20), id_at(out, 22)) == (1, 2), frame


def test_masks_decide_between_rivals_with_the_same_box():
    """Two objects of one class fill the same box; only their masks tell them apart."""
    ring = np.zeros(SHAPE, bool)
    ring[20:40, 30:50] = True
    ring[24:36, 34:46] = False
    cross = np.zeros(SHAPE, bool)
    cross[20:40, 38:42] = cross[28:32, 30:50] = True  # the same tight box as the ring
    tracker = Tracker()
    out = tracker.update(record([[30, 20, 20, 20]] * 2, masks=[ring, cross]))
    ids = {("ring" if m[22, 31] else "cross"): i for m, i in zip(out["masks"], out["track_ids"])}
    out = tracker.update(record([[30, 20, 20, 20]] * 2, masks=[cross, ring]))  # the order swapped
    assert {("ring" if m[22, 31] else "cross"): i for m, i in zip(out["masks"], out["track_ids"])} == ids


def test_low_score_detection_keeps_a_track_but_never_starts_one():
    tracker = Tracker()
    tracker.update(record([[20, 20, 16, 16]], scores=[0.9]))
    for _ in range(5):  # ByteTrack's second stage: low scores hold the track
        out = tracker.update(record([[20, 20, 16, 16]], scores=[0.3]))
        assert out["track_ids"].tolist() == [1] and out["states"].tolist() == [CONFIRMED]
        assert out["scores"][0] == pytest.approx(0.3)
    fresh = Tracker()
    for frame in range(10):
        out = fresh.update(record([[20 + frame, 20, 16, 16]], scores=[0.45]), tentative=True)
        assert len(out["track_ids"]) == 0
    assert fresh.tracks == []
    below = Tracker()
    below.update(record([[20, 20, 16, 16]], scores=[0.9]))
    assert below.update(record([[20, 20, 16, 16]], scores=[0.05]))["states"].tolist() == [LOST]  # < low_thr


@pytest.mark.parametrize("gap,same", [(5, True), (6, False)])
def test_lost_tracks_removed_after_buffer_frames(gap, same):
    tracker = Tracker(buffer=5, coast=0)
    tracker.update(record([[20, 20, 16, 16]]))
    for _ in range(gap):
        assert len(tracker.update(record([]))["track_ids"]) == 0
    assert len(tracker.tracks) == (1 if same else 0)
    out = tracker.update(record([[20, 20, 16, 16]]))
    assert out["track_ids"].tolist() == ([1] if same else [])  # a new track waits for its second hit
    if not same:
        assert tracker.update(record([[20, 20, 16, 16]]))["track_ids"].tolist() == [2]


@pytest.mark.parametrize("per_class", [True, False])
def test_a_car_never_takes_a_persons_id(per_class):
    person, car = 0, 2
    tracker = Tracker(per_class=per_class)
    tracker.update(record([[20, 20, 16, 30]], labels=[person]))
    for _ in range(3):
        out = tracker.update(record([[20, 20, 16, 30]], labels=[car]))
    assert (1 in out["track_ids"].tolist()) is (not per_class)


def test_tentative_tracks_not_reported_before_min_hits():
    tracker = Tracker(min_hits=3)
    assert tracker.update(record([[5, 5, 10, 10]]))["track_ids"].tolist() == [1]  # the first frame: at once
    reported, states = [], []
    for frame in range(5):
        out = tracker.update(record([[5, 5, 10, 10], [60, 20, 12, 12]]))
        reported.append(2 in out["track_ids"].tolist())
        states.append(next(t.state for t in tracker.tracks if t.track_id == 2))
    assert reported == [False, False, True, True, True]
    assert states[:2] == [TENTATIVE, TENTATIVE] and states[2] == CONFIRMED
    peek = Tracker(min_hits=3)
    peek.update(record([]))
    out = peek.update(record([[60, 20, 12, 12]]), tentative=True)
    assert out["track_ids"].tolist() == [1] and out["states"].tolist() == [TENTATIVE]
    assert len(peek.update(record([]), tentative=True)["track_ids"]) == 0  # a missed tentative track is gone
    assert peek.tracks == []


def test_reset_and_records_without_masks():
    tracker = Tracker()
    found = record([[10, 10, 10, 10]])
    del found["masks"]
    out = tracker.update(found)
    assert "masks" not in out and out["track_ids"].tolist() == [1]
    tracker.update(record([[40, 10, 10, 10]]))
    tracker.reset()
    assert tracker.tracks == [] and tracker.update(record([[40, 10, 10, 10]]))["track_ids"].tolist() == [1]


def test_config_checks():
    with pytest.raises(ValueError, match="iou"):
        TrackerConfig(iou="polygon")
    with pytest.raises(ValueError, match="low_thr"):
        Tracker(low_thr=0.7)
    with pytest.raises(ValueError, match="coast"):
        Tracker(buffer=2, coast=3)
    with pytest.raises(ValueError, match="size_memory"):
        Tracker(size_memory=0)
    with pytest.raises(ValueError, match="lost_growth"):
        Tracker(lost_growth=-0.1)
    with pytest.raises(ValueError, match="contain"):
        Tracker(contain=1.5)
    with pytest.raises(TypeError):
        Tracker(bufer=3)


def test_mot_lines_and_track_record():
    tracker = Tracker()
    out = tracker.update(record([[50, 5, 8, 9], [10, 12.5, 20, 30]], labels=[2, 0], scores=[0.7, 0.912345]))
    assert out["index"].tolist() == [0, 1]
    out = tracker.update(record([[10, 12.5, 20, 30], [50, 5, 8, 9]], labels=[0, 2], scores=[0.912345, 0.7]))
    assert out["index"].tolist() == [1, 0]  # ordered by track ID
    assert mot_lines(0, out) == ["1,1,50.00,5.00,8.00,9.00,0.7000,-1,-1,-1",
                                 "1,2,10.00,12.50,20.00,30.00,0.9123,-1,-1,-1"]
    entry = json.loads(json.dumps(track_record(4, out, ["person", "rider", "car"])))
    assert entry["frame"] == 5
    second = entry["instances"][1]
    assert (second["track_id"], second["class"], second["score"], second["state"]) == (2, "person", 0.9123,
                                                                                         "confirmed")
    assert second["bbox_xywh"] == [10.0, 12.5, 20.0, 30.0] and second["segmentation"]["size"] == list(SHAPE)
    assert entry["instances"][0]["class"] == "car"


def test_sequences_are_deterministic_with_known_identities():
    a = make_sequence(6, 4, size=(128, 64), seed=3)
    b = make_sequence(6, 4, size=(128, 64), seed=3)
    c = make_sequence(6, 4, size=(128, 64), seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a["frames"], b["frames"]))
    assert not all(np.array_equal(x, y) for x, y in zip(a["frames"], c["frames"]))
    for ga, gb in zip(a["gt"], b["gt"]):
        assert all(np.array_equal(ga[k], gb[k]) for k in ga)
    for truth in a["gt"]:
        assert truth["masks"].shape[1:] == (64, 128) and truth["masks"].dtype == bool
        assert len(set(truth["track_ids"].tolist())) == len(truth["track_ids"])
        assert truth["masks"].sum(0).max(initial=0) <= 1  # visible masks: occluded parts belong to one object
        assert np.all(truth["boxes"][:, 2:] > 0)
    assert a["frames"][0].shape == (64, 128, 3) and a["frames"][0].dtype == np.uint8
    dets_a, dets_b = perturb(a["gt"], seed=1), perturb(a["gt"], seed=1)
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(dets_a, dets_b) for k in x)


def test_perturb_drops_and_jitters():
    seq = make_sequence(20, 6, seed=0)
    exact = perturb(seq["gt"], drop=0.0, jitter=0.0, low_fraction=0.0)
    for truth, found in zip(seq["gt"], exact):
        np.testing.assert_array_equal(found["boxes"], truth["boxes"])
        np.testing.assert_array_equal(found["masks"], truth["masks"])
        assert np.all(found["scores"] >= 0.5)
    assert all(len(found["scores"]) == 0 for found in perturb(seq["gt"], drop=1.0))
    noisy = perturb(seq["gt"], drop=0.0, jitter=0.05, low_fraction=1.0, false_positives=2.0, seed=1)
    extra = sum(len(f["scores"]) - len(t["track_ids"]) for t, f in zip(seq["gt"], noisy))
    assert extra > 10  # false positives
    assert all(np.all(f["scores"] < 0.7) for f in noisy)


def test_a_sequence_written_as_video_reads_back_exactly_with_its_ground_truth(tmp_path):
    cv2 = pytest.importorskip("cv2")
    seq = make_sequence(12, 5, seed=2)
    video, gt_path = write_sequence(seq, tmp_path / "seq.avi", fps=25)
    assert gt_path == str(tmp_path / "seq_gt.txt")
    capture = cv2.VideoCapture(video)
    assert capture.get(cv2.CAP_PROP_FPS) == 25
    for frame in seq["frames"]:
        ok, bgr = capture.read()
        assert ok and np.array_equal(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), frame)  # lossless: the painted pixels
    assert not capture.read()[0]
    gt = read_mot(gt_path, 12)
    for truth, back in zip(seq["gt"], gt):
        np.testing.assert_array_equal(back["track_ids"], truth["track_ids"])
        np.testing.assert_array_equal(back["boxes"], truth["boxes"])
    first = open(gt_path).readline().split(",")
    assert first[0] == "1" and first[6:] == ["1", str(int(seq["gt"][0]["labels"][0]) + 1), "1\n"]


def test_read_mot_reads_the_trackers_lines_and_names_bad_ones(tmp_path):
    tracker = Tracker()
    seq = make_sequence(8, 4, seed=5)
    tracked = [tracker.update(found) for found in perturb(seq["gt"], drop=0.0, jitter=0.0, low_fraction=0.0)]
    path = tmp_path / "tracks_mot.txt"
    path.write_text("".join(line + "\n" for i, out in enumerate(tracked) for line in mot_lines(i, out)))
    back = read_mot(path, 10)
    assert len(back) == 10 and len(back[8]["track_ids"]) == 0 == len(back[9]["track_ids"])
    for out, read in zip(tracked, back):
        np.testing.assert_array_equal(read["track_ids"], out["track_ids"])
        np.testing.assert_allclose(read["boxes"], out["boxes"], atol=0.005)
        np.testing.assert_allclose(read["scores"], out["scores"], atol=5e-5)
    with pytest.raises(SoloError, match="frame 8 outside 1..7"):
        read_mot(path, 7)
    path.write_text("1,2,3\n")
    with pytest.raises(SoloError, match=":1: not a MOTChallenge line"):
        read_mot(path, 8)


def test_mot_metrics_of_the_tracker_on_a_synthetic_sequence():
    pytest.importorskip("motmetrics")
    seq = make_sequence(60, 6, seed=1)
    perfect = mot_metrics(seq["gt"], seq["gt"])
    assert (perfect["mota"], perfect["idf1"], perfect["id_switches"]) == (1.0, 1.0, 0)
    swapped = [dict(g, track_ids=g["track_ids"][::-1].copy()) if i >= 30 else g for i, g in enumerate(seq["gt"])]
    assert mot_metrics(seq["gt"], swapped)["id_switches"] > 0
    tracker = Tracker()
    tracked = [tracker.update(found) for found in perturb(seq["gt"], seed=1)]
    scores = mot_metrics(seq["gt"], tracked)
    assert scores["idf1"] > 0.85 and scores["mota"] > 0.85 and scores["id_switches"] <= 3, scores


def run_track(tracker, frames):
    """The outputs of `tracker` over `frames`, lists of boxes (x, y, w, h); an empty list is a frame without any."""
    return [tracker.update(record(boxes)) for boxes in frames]


def test_lost_track_kept_for_60_frames_by_default():
    """Objects hidden behind vehicles for 30-60 frames came back under a new ID with ByteTrack's 30."""
    frames = [[[20, 20, 16, 16]]] * 3 + [[]] * 45 + [[[20, 20, 16, 16]]]
    assert run_track(Tracker(), frames)[-1]["track_ids"].tolist() == [1]
    assert run_track(Tracker(buffer=30), frames)[-1]["track_ids"].tolist() == []  # a new, tentative track


@pytest.mark.parametrize("growth,same", [(0.05, True), (0.0, False)])
def test_recovery_search_grows_with_the_frames_lost(growth, same):
    """Moving 2 px a frame, hidden 20 frames, back 26 px ahead of its predicted place: no plain box overlap;
    the boxes enlarged by 1 + 0.05 * 19 of their size overlap enough, by 1 only they do not."""
    frames = [[[10 + 2 * f, 30, 10, 20]] for f in range(10)] + [[]] * 20
    frames.append([[10 + 2 * 30 + 26, 30, 10, 20]])
    out = run_track(Tracker(lost_growth=growth), frames)
    assert out[-1]["track_ids"].tolist() == ([1] if same else [])
    assert out[-1]["states"].tolist() == ([CONFIRMED] if same else [])


@pytest.mark.parametrize("memory,same", [(20, True), (1, False)])
def test_recovery_searches_at_the_size_before_an_occlusion(memory, same):
    """A still object covered from the left until a 2 px sliver is left, hidden 10 frames, back whole: the
    sliver's box alone is too thin for the buffered IoU (0.13 of the object's area), its size before is not."""
    whole = [[[40, 20, 20, 20]]] * 10
    covered = [[[60 - w, 20, w, 20]] for w in (16, 12, 8, 4, 2)]
    out = run_track(Tracker(size_memory=memory), whole + covered + [[]] * 10 + whole[:1])
    assert out[14]["track_ids"].tolist() == [1]
    assert out[-1]["track_ids"].tolist() == ([1] if same else [])


@pytest.mark.parametrize("contain,same", [(0.9, True), (0.0, False)])
def test_a_sliver_inside_a_lost_tracks_region_keeps_its_id(contain, same):
    """A still object hidden 5 frames comes back as a 2 px strip at its right edge (an object coming out from
    behind a vehicle): buffered IoU 0.1, under the gate; the strip lies wholly inside the track's enlarged
    search box. Without the containment test it starts a new track, confirmed (ID 2) on its second frame."""
    frames = [[[40, 20, 20, 20]]] * 10 + [[]] * 5 + [[[58, 20, 2, 20]]] * 3
    out = run_track(Tracker(contain=contain), frames)
    assert out[15]["track_ids"].tolist() == ([1] if same else [])
    assert out[-1]["track_ids"].tolist() == ([1] if same else [2])
    assert out[-1]["states"].tolist() == [CONFIRMED]


@pytest.mark.parametrize("x,strip_x,same", [(4, 6, True), (4, 0, False), (104, 120, True), (104, 126, False)])
def test_a_sliver_at_the_image_border_is_not_found_by_containment(x, strip_x, same):
    """An object entering the frame is a strip at its border: not taken by a lost track whose search box
    holds it (the right border from the masks' 128 px width), while the same strip off the border is."""
    frames = [[[x, 20, 20, 20]]] * 10 + [[]] * 5 + [[[strip_x, 20, 2, 20]]] * 2
    out = run_track(Tracker(), frames)
    assert out[-1]["track_ids"].tolist() == ([1] if same else [2])


def test_a_sliver_a_tentative_track_admits_is_not_taken_by_containment():
    """A strip that starts a track just outside a lost track's search box, which grows and moves over it
    the next frame, stays with its tentative track (they match after the recovery step)."""
    tracker = Tracker()
    for f in range(10):
        tracker.update(record([[10 + 2 * f, 20, 20, 20]]))  # 2 px a frame to the right
    for _ in range(5):
        tracker.update(record([]))
    assert tracker.update(record([[84, 30, 2, 10]]))["track_ids"].tolist() == []  # outside: track 2 starts
    out = tracker.update(record([[84, 30, 2, 10]]), tentative=True)  # inside the lost track's search box now
    assert out["track_ids"].tolist() == [2] and out["states"].tolist() == [CONFIRMED]


def test_recovery_comes_after_stage_one():
    """A detection that a confirmed track admits by plain IoU is not taken by a lost neighbour whose enlarged
    box fits it better (ranked by box IoU, the old single stage gave it to the lost track: 0.5 against 0.45)."""
    tracker = Tracker(iou="box")
    for _ in range(3):
        tracker.update(record([[20, 20, 16, 16], [42, 20, 16, 16]]))  # A left, B right, still
    tracker.update(record([[20, 20, 16, 16]]))  # B missing: lost from the next frame on
    out = tracker.update(record([[26, 20, 16, 16]]))  # A's detection 6 px to the right, touching B's box
    assert out["track_ids"].tolist() == [1] and out["index"].tolist() == [0]
    assert [t.state for t in tracker.tracks] == [CONFIRMED, LOST]


def test_benchmark_times_a_baseline_alternating(tmp_path):
    """benchmarks/track_synthetic.py: chosen seeds, quality only or with the update timed against another
    version of track.py (here the same file) in the same process."""
    pytest.importorskip("motmetrics")
    from helpers import load_benchmark

    import keras_solo.runtime.track as track_module

    bench = load_benchmark("track_synthetic")
    small = ["--frames", "8", "--objects", "3", "--size", "128x64"]
    bench.main(["--out", str(tmp_path / "quality.json"), "--seeds", "7", "--no-timing", "--tracker", "contain=0"]
               + small)
    result = json.loads((tmp_path / "quality.json").read_text())
    assert [row["seed"] for row in result["sequences"]] == [7] and result["timing"] == []
    assert result["args"]["tracker"] == [["contain", 0]]
    with pytest.raises(SystemExit):
        bench.main(["--out", str(tmp_path / "bad.json"), "--seeds", "7", "--tracker", "contain=2"] + small)
    bench.main(["--out", str(tmp_path / "timed.json"), "--seeds", "7", "--timing-objects", "5",
                "--timing-size", "320x180", "--timing-frames", "3", "--repeats", "1",
                "--baseline", track_module.__file__] + small)
    timed = json.loads((tmp_path / "timed.json").read_text())
    assert set(timed["summary"]) == {"perturbed", "exact", "perturbed_baseline", "exact_baseline"}
    assert timed["summary"]["perturbed"] == timed["summary"]["perturbed_baseline"]  # the same tracker
    (row,) = timed["timing"]
    for name in ("masks", "boxes_only", "masks_baseline", "boxes_only_baseline"):
        assert row[name]["updates"] == 3 and row[name]["median_ms"] > 0
