"""`v2m run` as a user runs it: a folder with a broken file, kill -9 mid-batch, rerun with --jobs 2."""

from __future__ import annotations

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
    (["run", "{tmp}/empty", "-o", "{tmp}/out", "--jobs", "0", "--model", "{model}"], "--jobs and --candidates must be"),
    (["run", "{tmp}/empty", "-o", "{tmp}/out", "--model", "{tmp}/none.safetensors"], "no such checkpoint"),
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{tmp}/clip.mp4"], "expected a v2m.model checkpoint"),
    (["run", "{tmp}/empty", "-o", "{tmp}/out", "--model", "{model}", "--style", "nope"], "available:"),
    (["run", "{tmp}/empty", "-o", "{tmp}/out", "--model", "{model}", "--arrange", "full"], "expected 'auto' or 'none'"),
    # sampling settings are checked before any video starts (not an "internal error" per video after its rhythm)
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--temperature", "0"], "temperature must be > 0"),
    (["run", "{tmp}/clip.mp4", "-o", "{tmp}/out", "--model", "{model}", "--top-p", "1.5"], "top_p in (0, 1]"),
])
def test_bad_invocations_are_one_line_errors(tmp_path, capsys, argv, message, debug_model):  # noqa: F811
    (tmp_path / "empty").mkdir()
    (tmp_path / "clip.mp4").write_bytes(b"not read: the settings are refused first")
    code = main([a.format(tmp=tmp_path, model=debug_model[0]) for a in argv])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
