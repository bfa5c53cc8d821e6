"""A batch of videos for `run`, in this process or in N worker processes; each video goes through
stages/run.py's `process` (resume, error isolation) with one model load per process.

Workers are spawned (never forked: the parent may hold OpenMP threads), each builds its Engine once in the pool's
initializer and reports each video's progress through a queue; the CPU threads are split between them. A worker
gets SIGKILL when the batch process dies, so `kill -9` of the batch leaves no orphan writing files.
"""

from __future__ import annotations

import os
from typing import Callable

from .run import Engine, RunConfig, Status, VideoJob, VideoResult, process

_WORKER: dict = {}  # the worker process's Engine and status queue, set once by the pool initializer


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
    import torch

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
    if jobs == 1:
        engine = Engine(config)
        results = []
        for job in jobs_list:
            results.append(process(job, engine, expected, force, say))
            done(results[-1])
        return results

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


def _drain(messages, say: Status, empty: type) -> None:
    while True:
        try:
            key, what = messages.get_nowait()
        except empty:
            return
        say(key, what)


def exit_code(results: list[VideoResult]) -> int:
    """0 when every video is done or skipped, 1 if any failed (DESIGN.md: batches)."""
    return 1 if any(r.status == "failed" for r in results) else 0
