"""The runtime's image / video loop (`keras_solo.runtime.sources`) with odd
inputs: file names that are not UTF-8, a full disk, overlay names that
collide, variable-rate video, --out equal to the source folder. A stand-in
engine (one square per image) keeps these TF-free and fast; the loop is the
one both `predict` commands run (tests/test_runner.py runs it with real
exports)."""

import argparse
import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from keras_solo.errors import SoloError
from keras_solo.runtime.cli import predict_command
from keras_solo.runtime.detections import overlay_names
from keras_solo.runtime.sources import video_ended_early

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The stand-in engine, as source so a subprocess (where a crash of OpenCV cannot take pytest down)
# runs the same one.
ENGINE = textwrap.dedent("""
    import numpy as np

    class SquareEngine:
        class_names = ("person", "rider", "car", "truck", "bus")

        def __call__(self, image, min_score=0.0):
            h, w = image.shape[:2]
            mask = np.zeros((1, h, w), bool)
            mask[0, h // 4: h // 2, w // 4: w // 2] = True
            found = {"scores": np.array([0.9], np.float32), "labels": np.array([2]), "masks": mask,
                     "boxes": np.array([[w // 4, h // 4, w // 2 - w // 4, h // 2 - h // 4]], np.float32)}
            return found, {"total": 0.001}
""")
namespace = {}
exec(ENGINE, namespace)
SquareEngine = namespace["SquareEngine"]


def predict(source, out, *, overwrite=False, limit=0):
    args = argparse.Namespace(source=os.fspath(source), out=os.fspath(out), overwrite=overwrite, score=0.3,
                              limit=limit)
    return predict_command(SquareEngine, args)


def predict_in_subprocess(source, out):
    """`predict` in a fresh process through the runtime's main error handling: (exit code, stderr)."""
    code = ENGINE + textwrap.dedent(f"""
        import argparse, os, sys
        from keras_solo.errors import SoloError
        from keras_solo.runtime.cli import predict_command
        sys.stdout.reconfigure(errors="backslashreplace")
        args = argparse.Namespace(source=os.fsdecode({os.fsencode(source)!r}), out=os.fsdecode({os.fsencode(out)!r}),
                                  overwrite=False, score=0.3, limit=0)
        try:
            predict_command(SquareEngine, args)
        except SoloError as e:
            print(f"error: {{e}}", file=sys.stderr)
            sys.exit(2)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO})
    return proc.returncode, proc.stderr


def image(seed=0, size=(96, 160)):
    return np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)


def write_png(path, seed=0):
    ok, data = cv2.imencode(".png", image(seed))
    assert ok
    data.tofile(path)


def write_mjpg(path, frames=6, fps=5):
    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 96))
    for i in range(frames):
        writer.write(image(i))
    writer.release()
    return path


def frame_count(path):
    capture = cv2.VideoCapture(os.fspath(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count


def test_names_that_are_not_utf8_are_read_and_written(tmp_path):
    """A byte 0xff in a file name: OpenCV segfaulted on it (exit 139) in imwrite, VideoCapture and VideoWriter."""
    folder = tmp_path / "in"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), b"caf\xff.png")
    write_png(odd)
    write_png(folder / "plain.png", seed=1)
    rc, err = predict_in_subprocess(folder, tmp_path / "out")
    assert rc == 0, err
    outputs = sorted(os.listdir(os.fsencode(tmp_path / "out")))
    assert outputs == [b"caf\xff.jpg", b"detections.json", b"plain.jpg"]
    sources = [r["source"] for r in json.load(open(tmp_path / "out" / "detections.json"))]
    assert sources == [os.fsdecode(b"caf\xff.png"), "plain.png"]
    # a video with such a name, written into a folder with such a name
    video = os.path.join(os.fsencode(tmp_path), b"clip\xff.avi")
    os.rename(write_mjpg(tmp_path / "clip.avi"), video)
    out = os.path.join(os.fsencode(tmp_path), b"out\xff")
    rc, err = predict_in_subprocess(video, out)
    assert rc == 0, err
    assert sorted(os.listdir(out)) == [b"clip\xff_pred.mp4", b"detections.json"]
    os.symlink(os.path.join(out, b"clip\xff_pred.mp4"), tmp_path / "check.mp4")
    assert frame_count(tmp_path / "check.mp4") == 6


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: writes fail with ENOSPC, as on a full disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.decode().strip()[:80]})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_the_one_line_error_and_leaves_no_partial_video(tmp_path, full_disk):
    """cv2.imwrite's False was ignored ("predicted 150 images" with one overlay written), and a video
    was left unplayable under its final name."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):  # ~40 KiB of JPEG each: the disk fills on the second
        ok, data = cv2.imencode(".png", image(i, (240, 320)))
        data.tofile(folder / f"{i:02d}.png")
    with pytest.raises(SoloError, match=r"/out/0\d\.jpg: could not write overlay \(No space left on device\)"):
        predict(folder, full_disk / "out")
    assert not [n for n in os.listdir(full_disk / "out") if "tmp" in n]  # no temporary file left behind
    for name in os.listdir(full_disk / "out"):
        os.remove(full_disk / "out" / name)
    video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(40):
        writer.write(image(i, (240, 320)))
    writer.release()
    with pytest.raises(SoloError, match=r"long_pred.mp4: could not write the video"):
        predict(video, full_disk / "out2")
    assert os.listdir(full_disk / "out2") == []  # neither the final name nor the partial file


def test_overlay_names_never_collide(tmp_path):
    """`a.png` + `a_png.jpg` + `a.jpg` + `A.PNG` gave 3 overlays for 4 inputs, `a.jpg` + `a.JPG` one for two."""
    names = ["a.png", "a_png.jpg", "a.jpg", "A.PNG", "a.JPG", "b.jpg"]
    mapped = overlay_names(names)
    assert len({n.lower() for n in mapped}) == len(names)
    assert mapped[-1] == "b.jpg" and all(n.endswith(".jpg") for n in mapped)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(names):
        write_png(folder / name, seed=i)
    records = predict(folder, tmp_path / "out")
    assert len(records) == 6
    overlays = [n for n in os.listdir(tmp_path / "out") if n != "detections.json"]
    assert len(overlays) == 6


def test_out_equal_to_the_source_folder_is_refused(tmp_path):
    """With --overwrite the second run read the first run's overlays as inputs ("predicted 6 images")."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        write_png(folder / f"{i}.png", seed=i)
    for overwrite in (False, True):
        with pytest.raises(SoloError, match="is the source folder; overlays written there would be read as inputs"):
            predict(folder, folder, overwrite=overwrite)
    assert sorted(os.listdir(folder)) == ["0.png", "1.png", "2.png"]


def write_variable_rate_mkv(path, durations):
    """An MJPEG .mkv whose frames last `durations` seconds each (PyAV writes any timestamps)."""
    av = pytest.importorskip("av")
    from fractions import Fraction

    container = av.open(str(path), "w")
    stream = container.add_stream("mjpeg", rate=25)
    stream.width, stream.height, stream.pix_fmt = 160, 96, "yuvj420p"
    stream.time_base = Fraction(1, 1000)
    start = 0.0
    for i, duration in enumerate(durations):
        frame = av.VideoFrame.from_ndarray(image(i), format="rgb24")
        frame.pts, frame.time_base = int(round(start * 1000)), Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
        start += duration
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return start


def test_variable_frame_rate_video_keeps_its_timing_without_a_false_warning(tmp_path, capsys):
    """A VFR .mkv (31 frames of 0.04-0.4 s) got "file ended early: read 31 of 121 frames" and an output
    written at 25 fps that lasted 1.24 s instead of the source's length."""
    durations = [0.04] * 20 + [0.4] * 10 + [0.04]
    length = write_variable_rate_mkv(tmp_path / "vfr.mkv", durations)
    records = predict(tmp_path / "vfr.mkv", tmp_path / "out")
    assert len(records) == 31
    assert "ended early" not in capsys.readouterr().err
    capture = cv2.VideoCapture(str(tmp_path / "out" / "vfr_pred.mp4"))
    seconds = capture.get(cv2.CAP_PROP_FRAME_COUNT) / capture.get(cv2.CAP_PROP_FPS)
    assert abs(seconds - length) <= 0.08, (seconds, length)
    # the same file cut short still warns, by time
    assert video_ended_early("v.mkv", 20, 121, 0, [40.0 * i for i in range(19)] + [1200.0], 25.0)
    assert video_ended_early("v.mkv", 31, 121, 0, [40.0 * i for i in range(20)] + [800.0 + 400 * i for i in range(11)],
                             25.0) is None


def test_constant_rate_video_writes_each_frame_once(tmp_path, capsys):
    write_mjpg(tmp_path / "cfr.avi", frames=6)
    assert len(predict(tmp_path / "cfr.avi", tmp_path / "out")) == 6
    assert frame_count(tmp_path / "out" / "cfr_pred.mp4") == 6
    assert "warning" not in capsys.readouterr().err
