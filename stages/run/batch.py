"""A batch of videos for `run`: the settings checked (`run_config`), the videos found and split into shards
(`prepare`, `--shard I/N`), and every video made by an executor (`run_batch`; stages/run/executors.py: here, in
worker processes, or on a Ray cluster), each through stages/run/video.py's `process` (resume, claimed work, error
isolation) with one model load per process or actor.

Videos another process has claimed (a second `run` on the same output folder, an overlapping shard) are looked at
again once the executor is through the rest, until they are finished there or their claim goes stale.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from pathlib import Path
from typing import Callable

from v2m import log
from v2m.errors import V2MError
from v2m.limits import MAX_BATCH
from v2m.media import VIDEO_SUFFIXES, media_files
from v2m.models.loading import resolve_device
from v2m.stages.arrange.styles import load_style
from v2m.stages.run import claims, executors
from v2m.stages.run.claims import LEASE_SECONDS
from v2m.stages.run.executors import Results, Work
from v2m.stages.run.video import RunConfig, Status, VideoJob, VideoResult, fingerprint, finished, is_done, plan
from v2m.stages.session import model_identity


def _on_ray(videos: list[VideoJob], work: Work, say: Status, jobs: int = 1, address: str | None = None) -> Results:
    """A Ray cluster (stages/run/on_ray.py); imported only when asked for (Ray is an optional extra)."""
    from v2m.stages.run.on_ray import run_on_ray

    return run_on_ray(videos, work, say, jobs=jobs, address=address)


GPU_BATCH = 8  # --batch's default on a GPU: a decode step of 8 rows costs about one of 1 there (BENCHMARKS.md)

EXECUTORS: dict[str, Callable[..., Results]] = {"local": executors.local, "processes": executors.processes,
                                                "ray": _on_ray}


def run_config(*, jobs: int = 1, batch: int | None = None, arrange: str = "auto", device: str = "auto",
               executor: str | None = None, **settings) -> RunConfig:
    """A RunConfig from command-line values, checked: --jobs/--batch/--candidates ≥ 1, --arrange auto|none, the
    executor, the device; --batch defaults to GPU_BATCH on a GPU and 1 on the CPU."""
    if jobs < 1 or settings.get("candidates", 1) < 1 or (batch is not None and batch < 1):
        raise V2MError("--jobs, --batch and --candidates must be ≥ 1")
    if executor is not None and executor not in EXECUTORS:
        raise V2MError(f"--executor {executor!r}: unknown", f"available: {', '.join(EXECUTORS)}")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise V2MError("--executor ray needs Ray, an optional extra", "pip install 'v2m[ray]'")
    if arrange not in ("auto", "none"):
        raise V2MError(f"--arrange {arrange!r}: expected 'auto' or 'none'")
    device = resolve_device(device)
    if batch is None:
        batch = GPU_BATCH if device.startswith("cuda") else 1
    if batch > MAX_BATCH:
        raise V2MError(f"--batch {batch}: more than {MAX_BATCH} videos in one batch")
    return RunConfig(arrange=arrange == "auto", device=device, batch=batch, **settings)


def prepare(source: Path, output: Path, config: RunConfig,
            shard: tuple[int, int] | None = None) -> tuple[list[VideoJob], dict]:
    """The videos of `source` (a file, or a folder searched recursively) as jobs writing under `output` (only
    shard I of N of them, when given), and the settings a finished video is checked against. What would fail every
    video fails here, once: a missing or wrong model, an unknown style, no videos, an output that is not a
    folder."""
    model_sha256 = model_identity(config.model, config.backend)["sha256"]
    if config.style is not None:
        load_style(config.style)
    if source.is_dir():
        videos, root = media_files(source, VIDEO_SUFFIXES), source
        # OUT inside INPUT (`run nest -o nest/scored`): its muxed videos are outputs, never inputs of a rerun
        inside = [v for v in videos if v.resolve().is_relative_to(output.resolve())]
        if inside:
            log.info(f"{source}: {len(inside)} video(s) inside the output folder {output} skipped (outputs, not inputs)")
            videos = [v for v in videos if v not in inside]
        if not videos:
            raise V2MError(f"{source}: no video files found", f"videos end in {', '.join(sorted(VIDEO_SUFFIXES))}")
    elif source.is_file():
        videos, root = [source], None
    else:
        raise V2MError(f"{source}: no such file or folder")
    if output.exists() and not output.is_dir():
        raise V2MError(f"{output}: exists and is not a folder", "pass -o a folder path")
    return select_shard(plan(videos, root, output), output, shard), fingerprint(config, model_sha256)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`--shard I/N` → (I, N), 0 ≤ I < N; None for no shard."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise V2MError(f"--shard {text!r}: expected I/N with 0 ≤ I < N (e.g. 0/4 … 3/4)",
                       "in a Slurm array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-(N-1)")
    return index, count


def in_shard(relative: str, shard: tuple[int, int]) -> bool:
    """Whether the video at `relative` (its path under the output folder, without suffix, '/'-separated) is in
    shard I of N: a hash of the path, so the split is the same on every machine and a video never moves to another
    shard when others are added or removed."""
    index, count = shard
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big") % count == index


def select_shard(jobs_list: list[VideoJob], output: Path, shard: tuple[int, int] | None) -> list[VideoJob]:
    """The jobs of shard I/N (all of them for None)."""
    if shard is None:
        return jobs_list
    return [job for job in jobs_list if in_shard(job.stem.relative_to(output).as_posix(), shard)]


def run_batch(jobs_list: list[VideoJob], config: RunConfig, expected: dict, *, jobs: int = 1, force: bool = False,
              status: Status | None = None, on_result: Callable[[VideoResult], None] | None = None,
              executor: str | None = None, address: str | None = None, lease: float = LEASE_SECONDS,
              poll: float = 1.0) -> list[VideoResult]:
    """Process every video; results come back in input order. Never raises for a bad video.

    `executor` (executors.EXECUTORS: local, processes, ray; default local for one job, processes for more) runs
    the videos, `jobs` at a time (worker processes, or Ray's model actors); `status(key, stage)` reports each
    video's progress, `on_result` each outcome as it comes. A video another process has claimed is looked at
    again every `poll` seconds until it is finished there (skipped here) or its claim goes stale (made here).
    """
    say = status or (lambda key, what: None)
    done = on_result or (lambda result: None)
    run = EXECUTORS[executor or ("processes" if jobs > 1 else "local")]
    work = Work(config, expected, force, lease)
    results: list[VideoResult | None] = [None] * len(jobs_list)
    todo = list(range(len(jobs_list)))
    while todo:
        claimed = []
        for position, result in run([jobs_list[i] for i in todo], work, say, jobs=jobs, address=address):
            index = todo[position]
            if result.status == "claimed":
                say(result.key, result.error or "claimed")
                claimed.append(index)
            else:
                results[index] = result
                done(result)
        todo = _wait_for_claims(jobs_list, claimed, work, say, done, results, poll)
    return [r for r in results if r is not None]


def _wait_for_claims(jobs_list, claimed: list[int], work: Work, say: Status, done, results, poll: float) -> list[int]:
    """Wait until a video another process claimed is finished (its result: skipped) or claimable again; return the
    videos still to hand to the executor then (those claimed elsewhere come back "claimed" from it, cheaply: no model
    is loaded for them, and are waited for again). The look is in this process, while nothing is claimable.

    A marker that appears while waiting counts as finished even with --force: the other process made the video
    during this run, with these settings (the marker's fingerprint says so)."""
    while claimed:
        for index in claimed:
            job = jobs_list[index]
            if is_done(job, work.expected):
                results[index] = finished(job, say)
                done(results[index])
        claimed = [i for i in claimed if results[i] is None]
        if any(claims.claimable(jobs_list[i].stem, work.lease) for i in claimed):
            return claimed
        if claimed:
            time.sleep(poll)
    return []


def exit_code(results: list[VideoResult]) -> int:
    """0 when every video is done or skipped, 1 if any failed (docs/ARCHITECTURE.md: batches)."""
    return 1 if any(r.status == "failed" for r in results) else 0
