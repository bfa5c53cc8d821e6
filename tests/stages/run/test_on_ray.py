"""`run --executor ray` on a local Ray cluster of 2 CPUs: failures isolated and named, a Ray worker killed mid-batch,
a rerun that redoes nothing finished. Skipped (with the reason) only where Ray is not installed: the test extra
installs it, so CI runs these."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.stages.generate.test_generate import debug_model  # noqa: F401  (fixture)
from tests.stages.run.test_video import small_video
from v2m.cli.main import main

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'v2m[ray]'; the test extra has it)")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs in this process; `run` joins it (connect() reuses an initialised Ray)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_eight_clips_two_broken_then_a_rerun_redoes_nothing(tmp_path, cluster, debug_model, capsys):  # noqa: F811
    videos, out = tmp_path / "videos", tmp_path / "out"
    for i in range(6):
        small_video(videos / f"clip{i}.mp4", seed=i, duration=2.5)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    (videos / "sub").mkdir()
    (videos / "sub" / "empty.mov").write_bytes(b"")
    argv = ["run", str(videos), "-o", str(out), "--model", str(debug_model[0]), "--device", "cpu",
            "--executor", "ray", "--jobs", "2", "--batch", "3"]  # actors batch the pieces of the videos they serve
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "6 done, 0 skipped (already finished), 2 failed" in err, err
    assert "broken failed" in err and "empty failed" in err  # each failure named, with its reason
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.done.json")}
    assert len(finished) == 6 and not list(out.rglob(".*.claim"))

    assert main(argv) == 1  # the rerun: every finished video skipped by its marker, the broken ones named again
    err = capsys.readouterr().err
    assert "0 done, 6 skipped (already finished), 2 failed" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.done.json")} == finished


def _task_workers() -> list[int]:
    """Pids of Ray workers running a video's task (Ray titles them `ray::process_video`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::process_video"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_a_worker_killed_mid_batch_is_retried_and_the_batch_completes(tmp_path, cluster, debug_model):  # noqa: F811
    from v2m.stages.run.batch import prepare, run_batch, run_config

    videos, out = tmp_path / "videos", tmp_path / "out"
    for i in range(2):
        small_video(videos / f"clip{i}.mp4", seed=i, duration=2.5)
    config = run_config(model=str(debug_model[0]), device="cpu", executor="ray")
    jobs_list, expected = prepare(videos, out, config)
    started, killed = threading.Event(), []

    def status(key, stage):
        if stage == "rhythm":
            started.set()

    def killer():
        started.wait(120)
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for pid in _task_workers()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    results = run_batch(jobs_list, config, expected, executor="ray", jobs=1, status=status)
    thread.join()
    assert killed, "no Ray worker was running a video to kill"
    assert [r.status for r in results] == ["done"] * 2, [(r.key, r.status, r.error) for r in results]
    assert len(list(out.glob("*.done.json"))) == 2 and not list(out.rglob(".*.claim"))

