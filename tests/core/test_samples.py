"""The synthetic media generator (v2m.samples) that the rhythm tests and benches score against."""

import json

import numpy as np

from tests.media import needs_ffmpeg
from v2m.cli.main import main as v2m_main
from v2m.media import ffprobe
from v2m.samples import SampleSpec, ground_truth, render_frames


def test_ground_truth_is_a_beat_grid_with_spaced_cuts():
    truth = ground_truth(SampleSpec(bpm=90.0, duration=30.0, seed=4, meter=3))
    beats = np.array(truth["beats"])
    assert np.allclose(np.diff(beats), 60 / 90.0, atol=1e-3)
    assert 0.15 <= beats[0] <= 0.15 + 60 / 90.0
    assert truth["downbeats"] == truth["beats"][::3]
    cuts = np.array(truth["cuts"])
    assert len(cuts) == 5 and np.all(np.diff(cuts) >= 2.0) and cuts[0] >= 1.5 and cuts[-1] <= 28.5
    assert truth["frames"] == 900


def test_frames_stream_one_at_a_time_and_cuts_change_the_scene():
    spec = SampleSpec(duration=4.0, width=64, height=36, cuts=1, noise=0.0, seed=2)
    truth = ground_truth(spec)
    frames = render_frames(spec, truth)
    first = next(frames)
    assert first.shape == (36, 64, 3) and first.dtype == np.uint8
    rest = list(frames)
    assert len(rest) + 1 == truth["frames"]
    c = truth["cut_frames"][0]
    jump = np.abs(rest[c - 1].astype(int) - rest[c - 2].astype(int)).mean()
    steady = np.abs(rest[c - 2].astype(int) - rest[c - 3].astype(int)).mean()
    assert jump > 5 * max(steady, 1.0)  # the cut frame differs far more than motion does


def sample(args: list[str]) -> int:
    return v2m_main(["sample", *args])


@needs_ffmpeg
def test_command_line_writes_video_and_truth_and_respects_if_missing(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert sample([str(out), "--duration", "1", "--width", "64", "--height", "36", "--bpm", "150"]) == 0
    truth = json.loads((tmp_path / "clip.mp4.truth.json").read_text())
    assert truth["bpm"] == 150.0
    info = ffprobe(out)
    kinds = sorted(s["codec_type"] for s in info["streams"])
    assert kinds == ["audio", "video"]
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"], int(video["nb_frames"])) == (64, 36, 30)
    before = out.read_bytes()
    assert sample([str(out), "--if-missing"]) == 0 and out.read_bytes() == before
    assert sample([str(out), "--duration", "1"]) == 1 and "already exists" in capsys.readouterr().err


@needs_ffmpeg
def test_audio_with_onsets(tmp_path):
    out = tmp_path / "clicks.wav"
    assert sample([str(out), "--bpm", "120", "--duration", "3"]) == 0
    truth = json.loads((tmp_path / "clicks.wav.truth.json").read_text())
    info = ffprobe(out)
    assert [s["codec_type"] for s in info["streams"]] == ["audio"]
    assert np.allclose(np.diff(truth["beats"]), 0.5, atol=1e-3) and truth["cuts"] == []
