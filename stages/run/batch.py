"""A batch of videos for `run`, in this process or in N worker processes; each video goes through
stages/run/video.py's `process` (resume, error isolation) with one model load per process.

Workers are spawned (never forked: the parent may hold OpenMP threads), each builds its Engine once in the pool's
initializer and reports each video's progress through a queue; the CPU threads are split between them. A worker
gets SIGKILL when the batch process dies, so `kill -9` of the batch leaves no orphan writing files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from v2m import log
from v2m.errors import V2MError
from v2m.limits import MAX_BATCH
from v2m.media import VIDEO_SUFFIXES, media_files
from v2m.models.loading import resolve_device
from v2m.stages.arrange.styles import load_style
from v2m.stages.run.video import Engine, RunConfig, Status, VideoJob, VideoResult, fingerprint, plan, process
from v2m.stages.session import model_identity

# The one piece of module state: a worker process's Engine and status queue, set once by the pool's initializer
# (per process by design: a spawned worker has no other way to keep its model between videos).
_WORKER: dict = {}


GPU_BATCH = 8  # --batch's default on a GPU: a decode step of 8 rows costs about one of 1 there (BENCHMARKS.md)


def run_config(*, jobs: int = 1, batch: int | None = None, arrange: str = "auto", device: str = "auto",
               **settings) -> RunConfig:
    """A RunConfig from command-line values, checked: --jobs/--batch/--candidates ≥ 1, --arrange auto|none, the
    device; --batch defaults to GPU_BATCH on a GPU and 1 on the CPU."""
    if jobs < 1 or settings.get("candidates", 1) < 1 or (batch is not None and batch < 1):
        raise V2MError("--jobs, --batch and --candidates must be ≥ 1")
    if arrange not in ("auto", "none"):
        raise V2MError(f"--arrange {arrange!r}: expected 'auto' or 'none'")
    device = resolve_device(device)
    if batch is None:
        batch = GPU_BATCH if device.startswith("cuda") else 1
    if batch > MAX_BATCH:
        raise V2MError(f"--batch {batch}: more than {MAX_BATCH} videos in one batch")
    return RunConfig(arrange=arrange == "auto", device=device, batch=batch, **settings)


def prepare(source: Path, output: Path, config: RunConfig) -> tuple[list[VideoJob], dict]:
    """The videos of `source` (a file, or a folder searched recursively) as jobs writing under `output`, and the
    settings a finished video is checked against. What would fail every video fails here, once: a missing or
    wrong model, an unknown style, no videos, an output that is not a folder."""
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
    return plan(videos, root, output), fingerprint(config, model_sha256)


def _die_with_parent() -> None:
    """Linux: a worker gets SIGKILL when the batch process dies, so `kill -9` leaves no orphan writing files."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphan finishes its video; outputs stay consistent (atomic writes, same seed)


def _worker_init(config: RunConfig, queue, threads: int) -> None:
    _die_with_parent()
    import torch  # the spawned worker's own thread budget (torch is loaded by then: the stages import it)

    torch.set_num_threads(threads)
    _WORKER["engine"] = Engine(config)
    _WORKER["queue"] = queue


def _worker_process(job: VideoJob, expected: dict, force: bool) -> VideoResult:
    queue = _WORKER["queue"]
    return process(job, _WORKER["engine"], expected, force, status=lambda key, what: queue.put((key, what)))


def run_batch(jobs_list: list[VideoJob], config: RunConfig, expected: dict, *, jobs: int = 1, force: bool = False,
              status: Status | None = None,
              on_result: Callable[[VideoResult], None] | None = None) -> list[VideoResult]:
    """Process every video; results come back in input order. Never raises for a bad video.

    `jobs` > 1 runs that many worker processes (spawned, each loading the model once) and splits the CPU
    threads between them; `status(key, stage)` reports each video's progress, `on_result` each outcome.
    """
    say = status or (lambda key, what: None)
    done = on_result or (lambda result: None)
    jobs = max(1, min(jobs, len(jobs_list)))
    if jobs == 1 and config.batch > 1 and len(jobs_list) > 1:
        return _run_threads(jobs_list, config, expected, force, say, done)
    if jobs == 1:
        return _run_here(jobs_list, Engine(config), expected, force, say, done)

    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = mp.get_context("spawn")  # never fork a process that may hold OpenMP threads
    messages = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    by_future = {}
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                             initargs=(config, messages, threads)) as pool:
        for index, job in enumerate(jobs_list):
            by_future[pool.submit(_worker_process, job, expected, force)] = index
        results: list[VideoResult | None] = [None] * len(jobs_list)
        pending = set(by_future)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(messages, say, queue_mod.Empty)
            for future in finished:
                job = jobs_list[by_future[future]]
                try:
                    result = future.result()
                except Exception as e:  # the worker itself died (e.g. killed, out of memory)
                    result = VideoResult(job.key, str(job.source), "failed",
                                         error=f"worker process failed: {type(e).__name__}: {e}")
                results[by_future[future]] = result
                done(result)
        _drain(messages, say, queue_mod.Empty)
    return [r for r in results if r is not None]


def _run_here(jobs_list: list[VideoJob], engine: Engine, expected: dict, force: bool, say: Status,
              done: Callable[[VideoResult], None]) -> list[VideoResult]:
    """One video after another in this process."""
    results = []
    for job in jobs_list:
        results.append(process(job, engine, expected, force, say))
        done(results[-1])
    return results


def _run_threads(jobs_list: list[VideoJob], config: RunConfig, expected: dict, force: bool, say: Status,
                 done: Callable[[VideoResult], None]) -> list[VideoResult]:
    """`batch` videos in flight in threads of this process, one model: their pieces are decoded together
    (run/batcher.py) while the CPU stages of the others go on. Results are reported as they finish."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    engine = Engine(config)
    engine.session  # opened once, before the threads start
    batcher = engine.batcher
    if batcher is None:  # a backend that generates whole pieces at once (diffusion): one video after another
        return _run_here(jobs_list, engine, expected, force, say, done)

    def one(job: VideoJob) -> VideoResult:
        batcher.enter()
        try:
            return process(job, engine, expected, force, say)
        finally:
            batcher.leave()

    results: list[VideoResult | None] = [None] * len(jobs_list)
    with ThreadPoolExecutor(max_workers=min(config.batch, len(jobs_list)), thread_name_prefix="v2m-video") as pool:
        by_future = {pool.submit(one, job): index for index, job in enumerate(jobs_list)}
        for future in as_completed(by_future):
            results[by_future[future]] = future.result()  # process() never raises for a bad video
            done(results[by_future[future]])
    log.debug(f"run: {len(batcher.batches)} generation batch(es) of {batcher.batches} video(s), {batcher.rows} rows")
    return [r for r in results if r is not None]


def _drain(messages, say: Status, empty: type) -> None:
    while True:
        try:
            key, what = messages.get_nowait()
        except empty:
            return
        say(key, what)


def exit_code(results: list[VideoResult]) -> int:
    """0 when every video is done or skipped, 1 if any failed (docs/ARCHITECTURE.md: batches)."""
    return 1 if any(r.status == "failed" for r in results) else 0
