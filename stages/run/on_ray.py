"""`run --executor ray`: a batch on a Ray cluster, with Ray's own primitives (tasks, actors, object refs, resources).

- **A task per video** (`process_video`, 1 CPU) runs the CPU stages — rhythm, controls, decode, render, mux,
  evaluate — through stages/run/video.py's `process`, so resume markers, claims and error isolation are the same
  as in one process. Ray places the tasks on the cluster's CPUs; a task whose worker dies (killed, out of memory,
  a node lost) is retried by Ray on another worker (`max_retries`), where `process` finds the dead worker's claim
  stale and makes the video again.
- **Model actors** (`ModelActor`, --jobs of them) each load the model once and generate for every video that asks;
  a task hands its controls to one actor and waits for the tokens (an object ref). The actor reserves no CPU:
  its caller, waiting, lends it the one it holds; on a GPU cluster each actor takes a GPU (num_gpus=1). A dead
  actor is restarted by Ray (`max_restarts`) and the call retried.
- **Progress** comes back through a `ray.util.queue.Queue` (an actor) the tasks put (video, stage) on; results
  come back as each task's object ref is ready (`ray.wait`), into the same progress bar and summary table.

The cluster: `address` (--ray-address), else RAY_ADDRESS, else a local one on this machine's CPUs. Every node must
see the inputs and the output folder at the same paths (a shared file system) and have v2m installed. Ray moves
task arguments and results between the cluster's own processes with its serializer (pickle-based): a Ray cluster
is a trusted set of machines; no file v2m reads is ever unpickled.
"""

from __future__ import annotations

import functools
import os

from v2m.errors import V2MError
from v2m.stages.run.executors import Results, Work, drain, worker_died
from v2m.stages.run.video import Engine, RunConfig, Status, VideoJob, VideoResult

TASK_RETRIES = 3  # a video's task is retried this often when its worker process dies (Ray's system failures)


def _ray():
    try:
        import ray
    except ImportError:
        raise V2MError("--executor ray needs Ray, an optional extra", "pip install 'v2m[ray]'")
    return ray


def connect(address: str | None = None):
    """Join the cluster at `address` (or RAY_ADDRESS), or start a local one; nothing if this process already is
    connected (a test's cluster, a script's)."""
    ray = _ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level="ERROR",
                     configure_logging=True)
        except ConnectionError as e:
            raise V2MError(f"cannot join the Ray cluster at {address}: {e}",
                           "start it with `ray start --head` or check --ray-address / RAY_ADDRESS")
    return ray


class RemoteEngine:
    """run_video's engine in a Ray task: the vocabulary here, generation by a model actor (video.Engine's seam)."""

    def __init__(self, config: RunConfig, actor):
        self.config, self.actor = config, actor
        self._recorded: dict | None = None

    @property
    def vocab(self):
        return _vocabulary(self.config.model)

    def recorded(self) -> dict:
        if self._recorded is None:
            self._recorded = _ray().get(self.actor.recorded.remote())
        return self._recorded

    def generate(self, controls: dict) -> tuple[dict, str | None]:
        return _ray().get(self.actor.generate.remote(controls))


@functools.cache
def _vocabulary(model: str | None):
    """The checkpoint's tokenizer, read once per Ray worker process (workers are reused across tasks): a cache."""
    from v2m.checkpoint import read_meta
    from v2m.stages.session import model_path
    from v2m.stages.tokens.vocab import load_tokenizer

    return load_tokenizer(read_meta(model_path(model))["tokenizer"])


class ModelActor:
    """One model load (video.Engine) serving the generation of many videos. A threaded actor: with `--batch N` the
    videos whose tasks use it are counted in (`enter`/`leave`) and their concurrent `generate` calls are decoded
    together by the engine's PieceBatcher (stages/run/batcher.py), as the local executor's threads are."""

    def __init__(self, config: RunConfig):
        self.engine = Engine(config)
        self.engine.session  # loaded once, before concurrent calls could race to load it

    def enter(self) -> None:
        if self.engine.batcher is not None:
            self.engine.batcher.enter()

    def leave(self) -> None:
        if self.engine.batcher is not None:
            self.engine.batcher.leave()

    def recorded(self) -> dict:
        return self.engine.recorded()

    def generate(self, controls: dict) -> tuple[dict, str | None]:
        return self.engine.generate(controls)


def process_video(job: VideoJob, work: Work, actor, messages) -> VideoResult:
    """One video in a Ray task: `process` with a RemoteEngine; progress onto the queue. The video counts as in
    flight at its actor while it runs (the actor's batcher waits for the videos it knows are coming)."""
    ray = _ray()
    ray.get(actor.enter.remote())
    try:
        return work.process(job, RemoteEngine(work.config, actor), lambda key, what: messages.put((key, what)))
    finally:
        actor.leave.remote()


def run_on_ray(videos: list[VideoJob], work: Work, say: Status, jobs: int = 1, address: str | None = None) -> Results:
    """Every video as a Ray task, `jobs` model actors; yields (index, result) as each task finishes."""
    ray = connect(address)
    from ray.util.queue import Empty, Queue

    gpu = work.config.device.startswith("cuda")
    # threads for the batch's concurrent generate calls plus enter/leave/recorded beside them
    actor_class = ray.remote(num_cpus=0, num_gpus=1 if gpu else 0, max_restarts=3, max_task_retries=3,
                             max_concurrency=work.config.batch + 4)(ModelActor)
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(process_video)
    messages = Queue(actor_options={"num_cpus": 0})
    actors = [actor_class.remote(work.config) for _ in range(max(1, min(jobs, len(videos))))]
    refs = {task.remote(job, work, actors[i % len(actors)], messages): i for i, job in enumerate(videos)}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.2)
            drain(messages, say, Empty)
            for ref in ready:
                index = refs[ref]
                try:
                    result = ray.get(ref)
                except Exception as e:  # retries spent: the worker kept dying (out of memory, a lost node)
                    result = worker_died(videos[index], e)
                yield index, result
        drain(messages, say, Empty)
    finally:
        for ref in pending:  # interrupted: no task of ours goes on writing
            ray.cancel(ref, force=True)
        for actor in actors:
            ray.kill(actor)
        ray.kill(messages.actor)

