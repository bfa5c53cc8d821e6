"""`v2m run` as a user runs it: a folder with a broken file, kill -9 mid-batch, rerun with --jobs 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.stages.generate.test_generate import debug_model  # noqa: F401  (fixture)
from tests.stages.run.test_video import small_video
from v2m.cli.main import main

V2M = [sys.executable, "-m", "v2m.cli.main"]


def test_killed_batch_resumes_without_redoing_finished_videos(tmp_path, debug_model):  # noqa: F811
    videos, out = tmp_path / "videos", tmp_path / "out"
    for i, name in enumerate(("a", "b")):
        small_video(videos / f"{name}.mp4", seed=i, duration=4.0)
    (videos / "sub").mkdir()
    (videos / "sub" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    command = [*V2M, "run", str(videos), "-o", str(out), "--model", str(debug_model[0]), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # kill -9 as soon as the first video is finished
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 180
    while not (out / "a.done.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert (out / "a.done.json").exists() and not (out / "b.done.json").exists()
    finished = (out / "a.done.json").stat().st_mtime_ns

    rerun = subprocess.run([*command, "--jobs", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 1, rerun.stderr
    assert rerun.stdout == ""
    assert "1 skipped" in rerun.stderr and "1 failed" in rerun.stderr and "broken" in rerun.stderr
    assert (out / "a.done.json").stat().st_mtime_ns == finished  # not redone
    for name in ("a", "b"):
        for suffix in ("mp4", "wav", "mid", "rhythm.json", "controls.json", "report.json"):
            assert (out / f"{name}.{suffix}").stat().st_size > 0
    assert not (out / "sub" / "broken.done.json").exists()
    assert not [p for p in out.rglob(".*") if ".part" in p.name]  # no temp file survived the kill


@pytest.mark.parametrize("argv,message", [
    (["run", "{tmp}/empty", "-o", "{tmp}/out", "--model", "{model}"], "no video files found"),
    (["run", "{tmp}/missing.mp4", "-o", "{tmp}/out", "--model", "{model}"], "no such file or folder"),
    (["run", "{tmp}/empty", "-o", "{tmp}/out", "--jobs", "0", "--model", "{model}"], "--jobs, --batch and --candidates must be"),
    (["run", "{tmp}/empty", "-o", "{tmp}/out", "--model", "{tmp}/none.safetensors"], "no such checkpoint"),
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{tmp}/clip.mp4"], "expected a v2m.model checkpoint"),
    (["run", "{tmp}/empty", "-o", "{tmp}/out", "--model", "{model}", "--style", "nope"], "available:"),
    (["run", "{tmp}/empty", "-o", "{tmp}/out", "--model", "{model}", "--arrange", "full"], "expected 'auto' or 'none'"),
    # sampling settings are checked before any video starts (not an "internal error" per video after its rhythm)
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--temperature", "0"], "temperature must be > 0"),
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--top-p", "1.5"], "top_p in (0, 1]"),
    # rhythm settings too: a tempo outside the range, a --sync that cannot take a tempo, an unknown --sync
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--tempo", "250"], "outside the tempo range"),
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--tempo", "90", "--sync", "cuts"],
     "cannot take --tempo"),
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--sync", "beat"], "unknown sync"),
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--meter", "0"], "meter 0 is not valid"),
    # where and which videos: an unknown executor, a shard outside 0..N-1
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--executor", "slurm"], "available: local"),
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--shard", "4/4"], "expected I/N"),
])
def test_bad_invocations_are_one_line_errors(tmp_path, capsys, argv, message, debug_model):  # noqa: F811
    (tmp_path / "empty").mkdir()
    (tmp_path / "clip.mp4").write_bytes(b"not read: the settings are refused first")
    code = main([a.format(tmp=tmp_path, model=debug_model[0]) for a in argv])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_edited_clip_tempo_confidence_and_the_planned_grid_warning(tmp_path, capsys, debug_model):  # noqa: F811
    """A clip of cuts without a pulse: the table shows its tempo and confidence, one warning line says the grid
    was planned; the music (MIDI and WAV) is as long as the video and starts with it. --tempo passes through."""
    import soundfile
    import symusic

    from v2m.montage import Scene, write_montage
    from v2m.samples import SampleSpec

    clip = tmp_path / "edit.mp4"
    truth = write_montage(clip, [Scene(3.0, "edit"), Scene(2.6, "edit"), Scene(3.4, "edit")],
                          SampleSpec(width=160, height=96, fps=15.0, seed=5))
    code = main(["run", str(clip), "-o", str(tmp_path / "out"), "--model", str(debug_model[0]), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "planned" in err and "confidence" in err
    warnings = [line for line in err.splitlines() if "no steady pulse" in line]
    assert len(warnings) == 1 and "--tempo" in warnings[0]
    score = symusic.Score.from_file(str(tmp_path / "out" / "edit.mid")).to("second")
    assert abs(score.end() - truth["duration"]) <= 0.1
    assert min(n.time for t in score.tracks for n in t.notes) <= 0.05
    audio = soundfile.info(str(tmp_path / "out" / "edit.wav"))
    assert abs(audio.frames / audio.samplerate - truth["duration"]) <= 0.1

    code = main(["-q", "run", str(clip), "-o", str(tmp_path / "given"), "--model", str(debug_model[0]),
                 "--device", "cpu", "--tempo", "96", "--meter", "3"])
    assert code == 0
    rhythm = json.loads((tmp_path / "given" / "edit.rhythm.json").read_text())["data"]
    assert rhythm["tempo"]["source"] == "hint" and rhythm["tempo"]["bpm"] == 96.0 and rhythm["meter"] == 3


def test_batched_videos_get_the_music_they_get_alone(tmp_path, capsys, debug_model):  # noqa: F811
    """--batch 3: three videos in flight in threads, their pieces decoded together; a broken one fails alone; each
    video's tokens are exactly those of the same video run by itself with the same --batch, and in worker processes
    (--jobs 2 --batch 3)."""
    videos = tmp_path / "videos"
    for i, (name, bpm) in enumerate((("a", 100.0), ("b", 132.0))):
        small_video(videos / f"{name}.mp4", seed=i, duration=4.0, bpm=bpm)
    (videos / "c.mp4").write_bytes(b"not a video")
    common = ["--model", str(debug_model[0]), "--device", "cpu", "--batch", "3", "--seed", "1"]
    code = main(["-v", "run", str(videos), "-o", str(tmp_path / "together"), *common])
    err = capsys.readouterr().err
    assert code == 1 and "c failed" in err and "generation batch(es) of [2]" in err
    code = main(["-q", "run", str(videos / "b.mp4"), "-o", str(tmp_path / "alone"), *common])
    assert code == 0
    ids = {where: json.loads((tmp_path / where / "b.tokens.json").read_text())["data"]["ids"]
           for where in ("together", "alone")}
    assert ids["together"] == ids["alone"]
    a = json.loads((tmp_path / "together" / "a.tokens.json").read_text())["data"]["ids"]
    assert a != ids["alone"] and (tmp_path / "together" / "a.done.json").exists()
    # --jobs 2 --batch 3: worker processes that each take a share of the videos in flight in their threads
    code = main(["-q", "run", str(videos), "-o", str(tmp_path / "workers"), *common, "--jobs", "2"])
    assert code == 1 and not (tmp_path / "workers" / "c.done.json").exists()
    for name, expected in (("a", a), ("b", ids["alone"])):
        assert json.loads((tmp_path / "workers" / f"{name}.tokens.json").read_text())["data"]["ids"] == expected
