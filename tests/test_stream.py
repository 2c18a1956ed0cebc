"""The streaming pipeline, `track` and `predict` on a video (keras_solo.runtime.stream): every frame
of a file, the latest-frame policy of a live source, Ctrl-C, bad sources. A
stand-in engine finds the bright squares of a synthetic clip (TF-free, fast);
tests/test_track.py tests the tracker itself."""

import argparse
import json
import os
import threading
import time

import cv2
import numpy as np
import pytest

from keras_solo.errors import SoloError
from keras_solo.runtime import sources as sources_module
from keras_solo.runtime import stream as stream_module
from keras_solo.runtime.cli import predict_command, track_command
from keras_solo.runtime.detections import draw_overlay
from keras_solo.runtime.stream import StreamSource, run_stream
from keras_solo.runtime.track import Tracker


class BrightEngine:
    """Each bright square (value > 200) of the frame is a car; `delay` s of "network" per call."""

    class_names = ("person", "rider", "car", "truck", "bus")

    def __init__(self, delay=0.0, interrupt_at=None):
        self.delay, self.interrupt_at, self.calls = delay, interrupt_at, 0
        self.progress = threading.Condition()

    def wait_for_call(self, number, timeout=5.0):
        """True once call `number` has started: another stage can tell that it runs beside the network."""
        with self.progress:
            return self.progress.wait_for(lambda: self.calls >= number, timeout)

    def __call__(self, image, min_score=0.0):
        with self.progress:
            self.calls += 1
            self.progress.notify_all()
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        time.sleep(self.delay)
        count, labels, stats, _ = cv2.connectedComponentsWithStats((image[..., 0] > 200).astype(np.uint8))
        masks = np.stack([labels == i for i in range(1, count)]) if count > 1 else np.zeros((0, *image.shape[:2]), bool)
        found = {"scores": np.full(count - 1, 0.9, np.float32), "labels": np.full(count - 1, 2),
                 "masks": masks, "boxes": stats[1:, :4].astype(np.float32)}
        return found, {"preprocess": 0.0, "network": self.delay, "decode": 0.0, "total": self.delay}


def write_clip(path, frames=40, fps=30, size=(160, 96)):
    """Two squares moving in opposite directions (they cross mid-clip, one above the other)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        image = np.zeros((size[1], size[0], 3), np.uint8)
        x = 10 + 2 * i
        image[10:30, x:x + 20] = 255
        image[50:70, size[0] - 30 - 2 * i:size[0] - 10 - 2 * i] = 255
        writer.write(image)
    writer.release()
    return path


def args_for(source, out, **options):
    values = dict(source=str(source), out=str(out), live=False, score=0.1, limit=0, overwrite=False)
    values.update(options)
    return argparse.Namespace(**values)


def test_a_file_is_tracked_frame_by_frame_with_stable_ids(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.avi")
    result = track_command(BrightEngine, args_for(clip, tmp_path / "out"))
    assert result["frames"] == 40 and result["dropped"] == 0 and result["tracks"] == 2
    records = json.load(open(tmp_path / "out" / "tracks.json"))
    assert [r["frame"] for r in records] == list(range(1, 41))
    ids = [sorted(i["track_id"] for i in r["instances"]) for r in records]
    assert all(frame_ids == [1, 2] for frame_ids in ids)
    top = [next(i for i in r["instances"] if i["bbox_xywh"][1] < 40)["track_id"] for r in records]
    assert len(set(top)) == 1  # the upper square keeps its ID through the crossing
    mot = (tmp_path / "out" / "tracks_mot.txt").read_text().splitlines()
    assert len(mot) == 80 and mot[0].split(",")[:2] == ["1", "1"]
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip_track.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
    report = capsys.readouterr().out
    assert "40 frames in" in report and "capture -> result p50" in report and "0 stale frames dropped" in report


def test_a_live_source_drops_stale_frames_and_keeps_latency_bounded(tmp_path):
    """A 30 frames/s source and a model at 10 frames/s: a queue would grow to a latency of seconds."""
    clip = write_clip(tmp_path / "clip.avi", frames=60)
    source = StreamSource(str(clip), live=True)
    result = run_stream(BrightEngine(delay=0.1), source, lambda frame, found: None)
    assert result["dropped"] > 20 and result["frames"] + result["dropped"] <= 60
    assert result["frames"] >= 10
    # every frame waited at most for the inference in progress: ~2 inference times, not the clip's length
    assert max(result["latency"]) < 0.6, max(result["latency"])
    file_result = run_stream(BrightEngine(delay=0.01), StreamSource(str(clip)), lambda frame, found: None)
    assert file_result["frames"] == 60 and file_result["dropped"] == 0


def overlaps_next_call(engine, number, frames, seen):
    """Whether the network's call for frame `number + 1` starts while frame `number` is still in another
    stage; appended to `seen`. In a pipeline that runs the stages one after another it never does (the
    wait times out, once: later frames are not waited for)."""
    if number < frames and all(seen):
        seen.append(engine.wait_for_call(number + 1))


class SlowTracker(Tracker):
    """The real tracker, `delay` s slower per frame; records the thread and the frame order it saw, and
    whether each frame's tracking ran beside the next frame's inference (`overlapped`)."""

    def __init__(self, delay, engine, frames):
        super().__init__()
        self.delay, self.engine, self.frames = delay, engine, frames
        self.threads, self.boxes, self.overlapped = set(), [], []

    def update(self, found, **options):
        self.threads.add(threading.get_ident())
        self.boxes.append(found["boxes"].copy())
        overlaps_next_call(self.engine, len(self.boxes), self.frames, self.overlapped)
        time.sleep(self.delay)
        return super().update(found, **options)


def test_tracking_overlaps_the_next_frames_inference(tmp_path):
    """Each frame is tracked while the network runs on the next one (the tracker in the inference thread
    adds its time to every frame's: the pipeline misses the model's rate). Told by the order of the
    calls, not by the clock: the tracker waits for the next network call to start."""
    clip = write_clip(tmp_path / "clip.avi", frames=20)
    engine, written = BrightEngine(delay=0.04), []
    tracker = SlowTracker(0.03, engine, frames=20)
    result = run_stream(engine, StreamSource(str(clip)), lambda frame, found: written.append(
        (frame.index, sorted(found["track_ids"].tolist()))), tracker=tracker)
    assert result["frames"] == 20 and [index for index, _ in written] == list(range(20))
    assert all(ids == [1, 2] for _, ids in written)  # tracked, in order, stable IDs
    assert threading.get_ident() not in tracker.threads
    assert tracker.overlapped == [True] * 19, tracker.overlapped
    first = BrightEngine()(cv2.cvtColor(cv2.VideoCapture(str(clip)).read()[1], cv2.COLOR_BGR2RGB))[0]["boxes"]
    np.testing.assert_array_equal(tracker.boxes[0], first)
    assert len(result["latency"]) == 20 and min(result["latency"]) >= 0.07  # ready once tracked
    assert min(result["stages"]["track"]) >= 0.03


def test_ctrl_c_keeps_everything_done_so_far(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.avi")
    result = track_command(lambda: BrightEngine(interrupt_at=11), args_for(clip, tmp_path / "out"))
    assert result["interrupted"] and result["frames"] == 10
    assert len(json.load(open(tmp_path / "out" / "tracks.json"))) == 10
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip_track.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10  # a playable file under its final name
    assert "(interrupted)" in capsys.readouterr().out


def test_a_folder_of_frames_is_a_sequence(tmp_path):
    clip = write_clip(tmp_path / "clip.avi", frames=6)
    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(clip))
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.png"), capture.read()[1])
    result = track_command(BrightEngine, args_for(folder, tmp_path / "out"))
    assert result["frames"] == 6 and result["tracks"] == 2
    assert sorted(os.listdir(tmp_path / "out")) == [f"{i:03d}.jpg" for i in range(6)] + ["tracks.json",
                                                                                        "tracks_mot.txt"]


def test_bad_sources_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 32)).release()
    cases = [
        (str(empty), f"{empty}: holds no frames (0 frames in the container)"),
        ("97", "camera 97: cannot read from the camera (it does not open: no such device, busy, or no permission)"),
        ("rtsp://127.0.0.1:9/none", "rtsp://127.0.0.1:9/none: cannot read the stream (it does not open within"),
        (str(tmp_path / "nope.mp4"), f"{tmp_path / 'nope.mp4'}: no such file or folder"),
    ]
    for source, message in cases:
        with pytest.raises(SoloError) as info:
            track_command(BrightEngine, args_for(source, tmp_path / "out"))
        assert str(info.value).startswith(message), str(info.value)
    assert not (tmp_path / "out").exists()  # nothing made before the source opened


class DimEngine(BrightEngine):
    """A detector whose scores stay under the tracker's default thresholds (as the demo model's do)."""

    def __call__(self, image, min_score=0.0):
        found, timing = super().__call__(image, min_score)
        found["scores"] = np.full_like(found["scores"], 0.4)
        return found, timing


def test_tracker_thresholds_are_options_and_no_track_says_why(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.avi", frames=10)
    assert track_command(DimEngine, args_for(clip, tmp_path / "default"))["tracks"] == 0
    assert "no track started: no detection scored 0.6 (--new-thr)" in capsys.readouterr().out
    result = track_command(DimEngine, args_for(clip, tmp_path / "low", high_thr=0.3, new_thr=0.35))
    assert result["tracks"] == 2 and "no track started" not in capsys.readouterr().out
    with pytest.raises(SoloError, match="--high-thr / --new-thr: need 0 <= low_thr <= high_thr <= new_thr"):
        track_command(DimEngine, args_for(clip, tmp_path / "bad", high_thr=0.7))


def predict_args(source, out, **options):
    values = dict(source=str(source), out=str(out), score=0.3, limit=0, overwrite=False)
    values.update(options)
    return argparse.Namespace(**values)


def test_predict_on_a_video_overlaps_inference_with_output(tmp_path, monkeypatch, capsys):
    """Each frame is drawn while the network runs on the next one (predict ran decode, inference,
    drawing and writing one after another); told by the order of the calls, as for the tracker."""
    threads, overlapped, drawn, engine = set(), [], [], BrightEngine(delay=0.05)

    def slow_draw(*args, **options):
        threads.add(threading.get_ident())
        drawn.append(1)
        overlaps_next_call(engine, len(drawn), 20, overlapped)
        time.sleep(0.05)
        return draw_overlay(*args, **options)

    for module in (stream_module, sources_module):
        monkeypatch.setattr(module, "draw_overlay", slow_draw, raising=False)
    clip = write_clip(tmp_path / "clip.avi", frames=20)
    records = predict_command(lambda: engine, predict_args(clip, tmp_path / "out"))
    assert threads and threading.get_ident() not in threads  # drawn beside the next frame's inference
    assert overlapped == [True] * 19, overlapped
    assert [r["source"] for r in records] == [f"clip.avi#{i}" for i in range(20)]
    assert all(len(r["instances"]) == 2 for r in records)
    assert json.load(open(tmp_path / "out" / "detections.json")) == records
    assert sorted(os.listdir(tmp_path / "out")) == ["clip_pred.mp4", "detections.json"]
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip_pred.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 20 and capture.get(cv2.CAP_PROP_FPS) == 30
    captured = capsys.readouterr()
    assert "20 frames in" in captured.out and "capture -> result p50" in captured.out  # the stream report
    assert "predicted 20 frames (40 instances, 20.0 FPS)" in captured.out  # the engine's own rate
    assert "warning" not in captured.err


def test_predict_on_a_video_with_limit_and_ctrl_c(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.avi", frames=12)
    assert len(predict_command(BrightEngine, predict_args(clip, tmp_path / "limit", limit=5))) == 5
    capture = cv2.VideoCapture(str(tmp_path / "limit" / "clip_pred.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert "warning" not in capsys.readouterr().err  # --limit is no early end
    records = predict_command(lambda: BrightEngine(interrupt_at=8), predict_args(clip, tmp_path / "stop"))
    assert [r["source"] for r in records] == [f"clip.avi#{i}" for i in range(7)]
    assert len(json.load(open(tmp_path / "stop" / "detections.json"))) == 7  # what was done, kept
    capture = cv2.VideoCapture(str(tmp_path / "stop" / "clip_pred.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 7  # a playable file under its final name
    assert sorted(os.listdir(tmp_path / "stop")) == ["clip_pred.mp4", "detections.json"]
    assert "(interrupted)" in capsys.readouterr().out


def test_the_source_is_closed_when_the_output_cannot_open(monkeypatch):
    """A camera or reader thread is released when the output fails before the stream starts."""

    class Source:
        closed = False

        def close(self):
            self.closed = True

    def refuse(*args, **kwargs):
        raise SoloError("out: cannot write the video")

    for name, run in (("PredictOutput", lambda source: stream_module.predict_source(BrightEngine(), source, "out")),
                      ("TrackOutput", lambda source: stream_module.track_source(BrightEngine(), source, "out",
                                                                                tracker=Tracker()))):
        monkeypatch.setattr(stream_module, name, refuse)
        source = Source()
        with pytest.raises(SoloError, match="cannot write the video"):
            run(source)
        assert source.closed, name
