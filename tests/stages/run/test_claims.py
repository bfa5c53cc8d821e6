"""Claimed work: a claim file per video, taken atomically, a lease renewed while held, taken over only when stale;
the shard split of `--shard I/N`; the Ray executor asked for without Ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from v2m.errors import V2MError
from v2m.stages.run import claims
from v2m.stages.run.batch import in_shard, parse_shard


def test_a_claim_is_taken_once_and_released(tmp_path):
    stem = tmp_path / "a"
    first = claims.take(stem, lease=30)
    assert isinstance(first, claims.Claim)
    owner = json.loads(claims.claim_path(stem).read_text())
    assert owner["host"] == socket.gethostname() and owner["pid"] == os.getpid()
    # this process again (another worker thread, same pid): held by a live owner, so refused, naming it
    assert claims.take(stem, lease=30) == f"{socket.gethostname()}:{os.getpid()}"
    assert not claims.claimable(stem, lease=30)
    first.release()
    assert not claims.claim_path(stem).exists() and claims.claimable(stem, lease=30)


def test_an_expired_lease_is_taken_over_and_the_old_owner_finds_out(tmp_path):
    stem = tmp_path / "a"
    old = claims.take(stem, lease=30)
    past = time.time() - 31
    os.utime(claims.claim_path(stem), (past, past))  # the owner stopped renewing 31 s ago
    new = claims.take(stem, lease=30)
    assert isinstance(new, claims.Claim) and new.owner["token"] != old.owner["token"]
    assert not old.renew()  # no longer its claim: it must not touch or delete it
    old.release()
    assert claims.claim_path(stem).exists()
    new.release()


def test_a_dead_owner_on_this_host_is_taken_over_at_once(tmp_path):
    stem = tmp_path / "a"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    claims.claim_path(stem).write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "pid_start": "1",
                                                   "token": "x"}))
    assert claims.claimable(stem, lease=3600)
    assert isinstance(claims.take(stem, lease=3600), claims.Claim)
    # a live owner on another host keeps its claim for the whole lease, whatever its pid means here
    other = tmp_path / "b"
    claims.claim_path(other).write_text(json.dumps({"host": "elsewhere", "pid": pid, "token": "y"}))
    assert claims.take(other, lease=3600) == f"elsewhere:{pid}"


def test_a_held_claim_is_renewed_while_working(tmp_path):
    stem = tmp_path / "a"
    claim = claims.take(stem, lease=0.4)
    past = time.time() - 0.3
    os.utime(claims.claim_path(stem), (past, past))
    with claim:
        time.sleep(0.25)  # the keeper touches it every lease/4 = 0.1 s
        assert time.time() - claims.claim_path(stem).stat().st_mtime < 0.2
    assert not claims.claim_path(stem).exists()


def test_racing_takers_get_one_claim(tmp_path):
    """Eight processes take the same stale claim at once: exactly one wins."""
    stem = tmp_path / "a"
    claims.claim_path(stem).write_text(json.dumps({"host": "gone", "pid": 1, "token": "old"}))
    past = time.time() - 100
    os.utime(claims.claim_path(stem), (past, past))
    script = ("import sys, time; from pathlib import Path; from v2m.stages.run import claims\n"
              "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
              "c = claims.take(Path(sys.argv[1]), lease=30)\n"
              "print('won' if isinstance(c, claims.Claim) else 'lost')\n"
              "time.sleep(1)\n")
    start = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(stem), start], stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    outcomes = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outcomes.count("won") == 1, outcomes


def test_shards_split_by_relative_path():
    paths = [f"sub{i % 3}/clip{i}" for i in range(200)]
    shards = [[p for p in paths if in_shard(p, (i, 4))] for i in range(4)]
    assert sorted(sum(shards, [])) == sorted(paths)  # every video in exactly one shard
    assert all(30 < len(s) < 70 for s in shards)  # and spread (a hash, not the order of listing)
    assert [p for p in paths if in_shard(p, (0, 1))] == paths
    assert parse_shard("3/4") == (3, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(V2MError, match="expected I/N"):
            parse_shard(bad)


def test_claim_files_are_hidden_beside_the_outputs():
    assert claims.claim_path(Path("out/sub/clip")) == Path("out/sub/.clip.claim")


def test_without_ray_the_executor_is_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    from v2m.stages.run.batch import run_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(V2MError, match=r"pip install 'v2m\[ray\]'"):
        run_config(executor="ray", device="cpu")


def test_videos_claimed_elsewhere_are_waited_for_then_all_handed_back(tmp_path):
    """run_batch's wait: nothing is handed back while every claim is live; once one goes stale, every video still
    unfinished is (those still claimed come back "claimed" from the executor and are waited for again)."""
    from v2m.stages.run.batch import _wait_for_claims
    from v2m.stages.run.executors import Work
    from v2m.stages.run.video import RunConfig, VideoJob

    jobs = [VideoJob(tmp_path / f"{name}.mp4", tmp_path / "out" / name) for name in ("a", "b")]
    (tmp_path / "out").mkdir()
    for job in jobs:
        claims.claim_path(job.stem).write_text(json.dumps({"host": "elsewhere", "pid": 7, "token": job.key}))
    work = Work(RunConfig(), {"settings": {}}, lease=0.6)
    started = time.monotonic()
    os.utime(claims.claim_path(jobs[1].stem), (time.time() + 5, time.time() + 5))  # b's owner keeps renewing
    again = _wait_for_claims(jobs, [0, 1], work, lambda *a: None, lambda r: None, [None, None], poll=0.05)
    assert again == [0, 1] and 0.5 < time.monotonic() - started < 5  # a's lease ran out first: both handed back
