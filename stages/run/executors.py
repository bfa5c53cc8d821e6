"""Where a batch's videos run: the executors `run_batch` chooses between (stages/run/batch.py).

An executor takes the videos to make and the Work (settings, marker fingerprint, --force, the claim lease), runs
stages/run/video.py's `process` on each somewhere, and yields (index, VideoResult) as each video finishes, in
whatever order they finish; `say(key, stage)` reports progress in the calling process. It never raises for a bad
video. Claims, resume and error isolation live in `process`, so every executor gets them alike.

- `local`: here, one video after another, one model load.
- `processes`: N spawned worker processes (never forked: the parent may hold OpenMP threads), each building its
  Engine once in the pool's initializer and reporting progress through a queue; the CPU threads are split
  between them. A worker gets SIGKILL when the batch process dies, so `kill -9` of the batch leaves no orphan
  writing files.
- `ray`: a Ray cluster (stages/run/on_ray.py, imported only when asked for: Ray is an optional extra).

batch.py's EXECUTORS names them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from v2m import log
from v2m.stages.run.claims import LEASE_SECONDS
from v2m.stages.run.video import Engine, RunConfig, Status, VideoJob, VideoResult, process

Results = Iterator[tuple[int, VideoResult]]


@dataclass(frozen=True)
class Work:
    """What every video of a batch is made with: the settings, the marker's fingerprint, --force, the lease."""

    config: RunConfig
    expected: dict
    force: bool = False
    lease: float = LEASE_SECONDS

    def process(self, job: VideoJob, engine, status: Status) -> VideoResult:
        return process(job, engine, self.expected, self.force, status, self.lease)


def local(videos: list[VideoJob], work: Work, say: Status, jobs: int = 1, **_) -> Results:
    """One video after another in this process (one model load, on the first video that needs it); with `--batch N`
    (a GPU's default) N videos in flight in threads, their pieces generated together (`threads`)."""
    yield from made(videos, work, say, Engine(work.config))


def made(videos: list[VideoJob], work: Work, say: Status, engine: Engine) -> Results:
    """`videos` made with one engine: one after another, or with `--batch N` (the engine then has a batcher) N in
    flight in threads (`threads`). Results as they finish."""
    if len(videos) > 1 and engine.batcher is not None:
        yield from threads(videos, work, say, engine)
        return
    for index, job in enumerate(videos):
        yield index, work.process(job, engine, say)


def threads(videos: list[VideoJob], work: Work, say: Status, engine: Engine) -> Results:
    """`batch` videos in flight in threads of this process, one model: each goes through its CPU stages on its own
    (ffmpeg, FluidSynth and numpy release the GIL) while their generate steps meet in the engine's PieceBatcher and
    are decoded as one batch (stages/run/batcher.py). Results as they finish."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    batcher = engine.batcher

    def one(job: VideoJob) -> VideoResult:
        batcher.enter()
        try:
            return work.process(job, engine, say)
        finally:
            batcher.leave()

    with ThreadPoolExecutor(max_workers=min(work.config.batch, len(videos)), thread_name_prefix="v2m-video") as pool:
        by_future = {pool.submit(one, job): index for index, job in enumerate(videos)}
        for future in as_completed(by_future):
            yield by_future[future], future.result()  # process() never raises for a bad video
    log.debug(f"run: {len(batcher.batches)} generation batch(es) of {batcher.batches} video(s), {batcher.rows} rows")


# The one piece of module state: a worker process's Engine and status queue, set once by the pool's initializer
# (per process by design: a spawned worker has no other way to keep its model between videos).
_WORKER: dict = {}


def die_with_parent() -> None:
    """Linux: a worker gets SIGKILL when the batch process dies, so `kill -9` leaves no orphan writing files."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphan finishes its video; outputs stay consistent (atomic writes, same seed)


def _worker_init(config: RunConfig, queue, threads: int) -> None:
    die_with_parent()
    import torch  # the spawned worker's own thread budget (torch is loaded by then: the stages import it)

    torch.set_num_threads(threads)
    _WORKER["engine"] = Engine(config)
    _WORKER["queue"] = queue


def _worker_videos(videos: list[VideoJob], work: Work) -> list[VideoResult]:
    """A worker's share: one video, or (--batch N) up to N videos in flight in its threads, their pieces generated
    together (`made`, as in `local`) — so `--jobs J --batch N` keeps J × N videos in flight in J processes."""
    queue = _WORKER["queue"]
    results: list = [None] * len(videos)
    for index, result in made(videos, work, lambda key, what: queue.put((key, what)), _WORKER["engine"]):
        results[index] = result
    return results


def worker_died(job: VideoJob, error: BaseException) -> VideoResult:
    """The result of a video whose worker itself died (killed, out of memory): failed, and named."""
    return VideoResult(job.key, str(job.source), "failed", error=f"worker process failed: {type(error).__name__}: "
                                                                  f"{error}")


def processes(videos: list[VideoJob], work: Work, say: Status, jobs: int = 2, **_) -> Results:
    """`jobs` spawned worker processes, one model load each, the CPU threads split between them; with --batch N each
    takes N videos at a time and makes them in its threads, their pieces generated as one batch (`_worker_videos`)."""
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    jobs = max(1, min(jobs, len(videos)))
    context = mp.get_context("spawn")  # never fork a process that may hold OpenMP threads
    messages = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                             initargs=(work.config, messages, threads)) as pool:
        size = max(1, min(work.config.batch, -(-len(videos) // jobs)))  # every worker gets work
        by_future = {pool.submit(_worker_videos, videos[start:start + size], work): start
                     for start in range(0, len(videos), size)}
        pending = set(by_future)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain(messages, say, queue_mod.Empty)
            for future in finished:
                start = by_future[future]
                share = videos[start:start + size]
                try:
                    results = future.result()
                except Exception as e:  # the worker itself died (e.g. killed, out of memory)
                    results = [worker_died(job, e) for job in share]
                for offset, result in enumerate(results):
                    yield start + offset, result
        drain(messages, say, queue_mod.Empty)


def drain(messages, say: Status, empty: type) -> None:
    """Report every (video, stage) message waiting in a queue (`get_nowait` raising `empty` when there is none)."""
    while True:
        try:
            key, what = messages.get_nowait()
        except empty:
            return
        say(key, what)
