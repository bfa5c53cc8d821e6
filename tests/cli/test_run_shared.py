"""Two `v2m run` processes on one output folder — side by side, or two overlapping shards of a job array — make
each video exactly once: the work is counted in both runs' logs and in the markers (who made each video)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.stages.generate.test_generate import debug_model  # noqa: F401  (fixture)
from tests.stages.run.test_video import small_video
from v2m.stages.run.batch import in_shard

V2M = [sys.executable, "-m", "v2m.cli.main"]
NAMES = ("a", "b", "c", "d")


def _two_runs(tmp_path, model, first: list[str], second: list[str]):
    videos, out = tmp_path / "videos", tmp_path / "out"
    for i, name in enumerate(NAMES):
        small_video(videos / f"{name}.mp4", seed=i, duration=3.0)
    command = [*V2M, "run", str(videos), "-o", str(out), "--model", str(model), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for extra in (first, second)]
    outputs = [p.communicate(timeout=400) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr
        assert stdout == ""
    logs = [stderr for _, stderr in outputs]
    made = {name: sum(len(re.findall(rf"^{name} done \(", log, re.M)) for log in logs) for name in NAMES}
    return out, logs, made, [p.pid for p in procs]


def test_two_runs_on_one_output_folder_make_each_video_once(tmp_path, debug_model):  # noqa: F811
    out, logs, made, pids = _two_runs(tmp_path, debug_model[0], [], [])
    assert made == {name: 1 for name in NAMES}, logs
    makers = [json.loads((out / f"{name}.done.json").read_text())["made_by"]["pid"] for name in NAMES]
    assert set(makers) <= set(pids)
    for log in logs:  # each run accounts for every video: made there, or finished by the other
        summary = re.search(r"(\d+) done, (\d+) skipped .* (\d+) failed", log)
        assert summary and int(summary[1]) + int(summary[2]) == len(NAMES) and summary[3] == "0", log
    assert not list(out.glob(".*.claim"))  # every claim released


def test_overlapping_shards_make_each_video_once(tmp_path, debug_model):  # noqa: F811
    # shard 0 of 2 overlaps shard 0 of 1 (everything): the videos of shard 0/2 are wanted by both
    out, logs, made, pids = _two_runs(tmp_path, debug_model[0], ["--shard", "0/2"], ["--shard", "0/1"])
    assert made == {name: 1 for name in NAMES}, logs
    in_first = [name for name in NAMES if in_shard(name, (0, 2))]
    assert f"shard 0/2: {len(in_first)} video(s)" in logs[0]
    for name in NAMES:
        assert json.loads((out / f"{name}.done.json").read_text())["made_by"]["pid"] in pids
