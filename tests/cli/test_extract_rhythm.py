"""`v2m extract-rhythm` end to end: real files through ffmpeg, stdout kept apart from stderr, exit codes,
one-line errors, nothing written on failure, batch isolation, and accuracy on a few synthetic videos."""

import json

import mir_eval
import numpy as np
import pytest

from tests import media
from v2m.cli.main import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("rhythm-media")


@pytest.fixture(scope="module")
def clip(folder):
    return media.video(folder)  # 8 s, 320x180, 120 BPM, mixed motion, one cut, with audio


def run(capfd, *args):
    code = main(["extract-rhythm", *map(str, args)])
    out, err = capfd.readouterr()
    return code, out, err


def test_artifact_on_stdout_logs_on_stderr(capfd, clip):
    path, truth = clip
    code, out, err = run(capfd, path)
    assert code == 0
    artifact = json.loads(out)  # stdout is exactly one artifact
    assert artifact["format"] == "v2m.rhythm" and artifact["version"] == 1
    assert artifact["source"]["name"] == "clip.mp4" and len(artifact["source"]["sha256"]) == 64
    assert artifact["created_by"]["config"]["method"] == "flow"
    data = artifact["data"]
    assert data["kind"] == "video" and data["source_fps"] == 30.0 and data["frame_rate"] == 30.0
    assert set(data) == {"kind", "duration", "source_fps", "frame_rate", "method", "envelope", "tempo", "beats",
                         "beat_strength", "meter", "downbeats", "cuts", "segments", "scenes"}
    assert set(data["tempo"]) == {"bpm", "confidence", "half", "double", "source", "planned"}
    assert data["tempo"]["source"] == "estimated" and data["tempo"]["planned"] == 0.0  # a steady pulse is read
    assert data["scenes"][0]["start"] == 0.0 and data["scenes"][-1]["end"] == pytest.approx(data["duration"], abs=0.05)
    assert all(s["sync"] == "pulse" and s["confidence"] > 0.2 for s in data["scenes"])
    assert abs(data["tempo"]["bpm"] / truth["bpm"] - 1) < 0.04
    assert mir_eval.beat.f_measure(np.array(truth["beats"]), np.array(data["beats"]), 0.07) >= 0.9
    assert len(data["beat_strength"]) == len(data["beats"])
    assert set(data["downbeats"]) <= set(data["beats"])
    assert len(mir_eval.util.match_events(np.array(truth["cuts"]), np.array(data["cuts"]), 0.1)) == len(truth["cuts"])
    assert "BPM" in err and "{" not in err


def test_same_input_same_bytes(capfd, clip):
    first = run(capfd, clip[0], "--method", "diff")[1]
    assert first == run(capfd, clip[0], "--method", "diff")[1]


@pytest.mark.parametrize("bpm,motion,noise", [(75.0, "bounce", 12.0), (165.0, "pan", 4.0)])
def test_accuracy_on_synthetic_videos(capfd, folder, bpm, motion, noise):
    path, truth = media.video(folder, f"acc-{motion}.mp4", bpm=bpm, motion=motion, noise=noise, duration=10.0, cuts=2, seed=7)
    code, out, _ = run(capfd, path)
    data = json.loads(out)["data"]
    assert code == 0
    assert abs(data["tempo"]["bpm"] / bpm - 1) < 0.04
    assert mir_eval.beat.f_measure(np.array(truth["beats"]), np.array(data["beats"]), 0.07) >= 0.9
    assert len(data["cuts"]) == 2 and len(mir_eval.util.match_events(np.array(truth["cuts"]), np.array(data["cuts"]), 0.1)) == 2


def test_output_file_force_and_options(capfd, clip, tmp_path):
    dest = tmp_path / "r.json"
    code, out, _ = run(capfd, clip[0], "-o", dest, "--start", "2", "--duration", "4", "--tempo", "120", "--meter", "3",
                       "--method", "diff")
    assert code == 0 and out == ""
    data = json.loads(dest.read_text())["data"]
    assert data["duration"] == pytest.approx(4.0, abs=0.05) and data["method"] == "diff"
    assert data["tempo"] == {"bpm": 120.0, "confidence": 1.0, "half": 60.0, "double": 240.0, "source": "hint",
                             "planned": 0.0}
    assert data["meter"] == 3 and max(data["beats"]) < 4.0
    before = dest.read_bytes()
    code, _, err = run(capfd, clip[0], "-o", dest)
    assert code == 1 and "already exists" in err and "--force" in err and dest.read_bytes() == before
    assert run(capfd, clip[0], "-o", dest, "--force")[0] == 0


def test_audio_only_file_is_read_as_audio(capfd, folder):
    path, truth = media.onset_audio(folder, "clicks.m4a", bpm=100.0)
    code, out, err = run(capfd, path)
    assert code == 0 and "no video stream" in err and "as audio" in err
    data = json.loads(out)["data"]
    assert data["kind"] == "audio" and data["method"] == "audio" and data["source_fps"] is None
    assert abs(data["tempo"]["bpm"] / 100.0 - 1) < 0.04
    assert mir_eval.beat.f_measure(np.array(truth["beats"]), np.array(data["beats"]), 0.07) >= 0.9


def test_video_without_audio_is_fine(capfd, folder):
    path, _ = media.video(folder, "silent.mp4", audio=False, duration=4.0, cuts=0)
    code, out, _ = run(capfd, path, "--method", "diff")
    assert code == 0 and json.loads(out)["data"]["kind"] == "video"


def bad_inputs(folder, clip_path):
    return {
        "missing": (folder / "nope.mp4", "no such file"),
        "directory": (folder, "is a folder, so the output must be a folder too"),
        "empty": (media.empty(folder), "is empty"),
        "truncated": (media.truncated(clip_path, folder, index_first=False), "not a readable video or audio file"),
        "corrupt": (media.corrupt(folder), "not a readable video or audio file"),
        "still image": (media.still_image(folder), "is a still image"),
        "0.2 s clip": (media.video(folder, "short.mp4", duration=0.2, cuts=0)[0], "too short"),
        "tokens artifact": (media.tokens_artifact(folder), "found a v2m.tokens artifact"),
        "midi": (media.midi(folder), "found a MIDI file"),
    }


def test_bad_inputs_are_one_line_errors_and_write_nothing(capfd, folder, clip, tmp_path):
    for what, (path, message) in bad_inputs(folder, clip[0]).items():
        dest = tmp_path / f"{what}.json"
        code, out, err = run(capfd, path, "-o", dest)
        assert code == 1, what
        assert out == "" and not dest.exists(), what
        lines = err.strip().splitlines()
        assert lines[-1].startswith("v2m: error: ") and message in lines[-1], (what, err)
        assert "Traceback" not in err, what
    assert list(tmp_path.iterdir()) == []  # no temp files left behind either


def test_truncated_but_playable_mp4_gives_a_result_and_a_warning(capfd, folder, clip):
    path = media.truncated(clip[0], folder, "cut-short.mp4", keep=0.6)
    code, out, err = run(capfd, path, "--method", "diff")
    assert code == 0 and "looks truncated" in err
    assert 2.0 < json.loads(out)["data"]["duration"] < 7.0


def test_short_clip_with_a_tempo_hint_gives_a_grid(capfd, folder):
    path, _ = media.video(folder, "short.mp4", duration=0.2, cuts=0)
    code, out, _ = run(capfd, path, "--tempo", "120")
    data = json.loads(out)["data"]
    assert code == 0 and data["tempo"]["source"] == "hint" and data["duration"] == pytest.approx(0.2, abs=0.04)


def test_bad_options_are_errors(capfd, clip):
    assert run(capfd, clip[0], "--method", "magic")[0] == 1
    code, _, err = run(capfd, clip[0], "--tempo-range", "fast")
    assert code == 1 and "LOW,HIGH" in err
    assert run(capfd, clip[0], "--start", "99")[0] == 1


def test_folder_batch_isolates_a_broken_file(capfd, folder, tmp_path):
    batch = tmp_path / "in"
    batch.mkdir()
    media.video(batch, "a.mp4", duration=4.0, cuts=0, audio=False)
    media.corrupt(batch, "b.mp4")
    (batch / "a.mp4.truth.json").unlink()
    out_dir = tmp_path / "out"
    code, out, err = run(capfd, batch, "-o", f"{out_dir}/", "--method", "diff")
    assert code == 1 and out == ""
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.rhythm.json"]
    assert "b.mp4" in err and "1 failed" in err
