"""run: one video or a folder of videos → a finished, muxed soundtrack per video.

Per video NAME the output folder gets NAME.rhythm.json, NAME.controls.json, NAME.tokens.json, NAME.mid,
NAME.wav, NAME.mp4 (the video with the music) and NAME.report.json (evaluate's rhythm + music report), and
last of all NAME.done.json, the completion marker.

Resume (even after `kill -9`): every file is written atomically (temp file + rename), and the marker is written
only after all the others, recording the input's sha256, the run's settings and each output's size and sha256.
A video whose marker is valid is skipped; anything else (no marker, a stale marker, a missing or changed output)
is redone from the start, and stray temp files from a killed write are removed first.

One model load per process: `Engine` holds the loaded model, its vocabulary and the style, built on first use
and passed to every stage and every video the process handles. With --jobs N each worker process builds one
Engine in the pool's initializer and keeps it for all the videos it is given; the main process loads no model.

Failures are isolated per video: one bad file is recorded with its one-line reason and the others go on.
A batch of videos, in this process or in worker processes, is stages/run/batch.py.
"""

from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from v2m import artifacts
from v2m.config import to_dict
from v2m.errors import V2MError
from v2m.stages.decode import render as decode
from v2m.stages.evaluate import report as evaluate
from v2m.stages.generate.diffusion import diffusion_settings, generate_diffusion
from v2m.stages.generate.sampler import DEFAULT_STYLE, GenerateConfig, arrangement_record, finish, generate, prepare
from v2m.stages.rhythm.extract import RhythmConfig, extract_rhythm, grid_warning
from v2m.stages.run import claims
from v2m.stages.run.batcher import PieceBatcher
from v2m.stages.session import Session, open_model
from v2m.stages.tokens.video_controls import controls_from_rhythm

MARKER_VERSION = 1
OUTPUTS = ("rhythm.json", "controls.json", "tokens.json", "mid", "wav", "mp4", "report.json")
STAGES = ("rhythm", "controls", "generate", "decode", "render", "mux", "evaluate")

Status = Callable[[str, str], None]  # (video key, stage or outcome) → None


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a video's outputs; recorded in each completion marker.

    `model` is a checkpoint path (None = the default preset). `seed` is used as is for every video, so a
    video's music does not depend on which other videos are in the batch or on the order they run in.
    """

    model: str | None = None
    backend: str | None = None
    kernel: str = "auto"
    device: str = "cpu"
    style: str | None = None
    arrange: bool = True
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    candidates: int = 1  # > 1: decode this many as one batch, keep the best rhythm agreement (generate --rerank)
    batch: int = 1  # > 1: the pieces of up to this many videos are decoded as one batch of `batch` rows (a GPU)
    soundfont: str | None = None
    tempo: float | None = None  # extract-rhythm's --tempo, --meter and --sync, passed through
    meter: int | None = None
    sync: str = "auto"
    steps: int | None = None  # the diffusion backend's sampler (None: its defaults)
    guidance: float | None = None

    def __post_init__(self):
        # bad settings are one line before any video starts, not a failure per video
        self.sampling()
        self.rhythm().check()
        diffusion_settings(self.steps, self.guidance)

    def rhythm(self) -> RhythmConfig:
        """The rhythm stage's settings."""
        return RhythmConfig(tempo=self.tempo, meter=self.meter, sync=self.sync)

    def sampling(self):
        """The generate stage's GenerateConfig (kept flat here: they are the resume marker's recorded settings)."""
        try:
            return GenerateConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, seed=self.seed,
                                  num_samples=self.candidates)
        except ValueError as e:
            raise V2MError(str(e).replace("num_samples", "candidates"))


@dataclass(frozen=True)
class VideoJob:
    """One input video and where its outputs go: `stem` is OUTDIR/[subfolders/]NAME, without suffix."""

    source: Path
    stem: Path

    @property
    def key(self) -> str:
        return self.stem.name

    def output(self, suffix: str) -> Path:
        return self.stem.with_name(f"{self.stem.name}.{suffix}")

    @property
    def marker(self) -> Path:
        return self.output("done.json")


@dataclass
class VideoResult:
    """What happened to one video: `status` is done, skipped or failed; `seconds` per stage (mux and evaluate
    overlap), `wall` the whole video's wall time."""

    key: str
    source: str
    status: str
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    duration: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    wall: float | None = None
    tempo: dict = field(default_factory=dict)  # the rhythm's tempo: bpm, confidence, source, planned share
    warning: str | None = None  # the rhythm's one-line warning when its grid is a guess (grid_warning)

    def total_seconds(self) -> float | None:
        """The video's wall time (markers from before `wall` was kept: the sum of its stages)."""
        return self.wall if self.wall is not None else (sum(self.seconds.values()) if self.seconds else None)


# ---------------------------------------------------------------- planning and resume

def plan(inputs: list[Path], root: Path | None, outdir: Path) -> list[VideoJob]:
    """Jobs for `inputs`; files found under folder `root` keep their sub-folders so equal names never collide."""
    jobs = []
    for video in inputs:
        relative = video.relative_to(root) if root is not None else Path(video.name)
        jobs.append(VideoJob(source=video, stem=outdir / relative.with_suffix("")))
    # two videos whose names differ only in the suffix (a.mp4, a.mov) would write the same OUT/a.*: refused before
    # any work, naming both, rather than one result silently replacing the other
    claimed: dict[Path, Path] = {}
    for job in jobs:
        other = claimed.setdefault(job.stem, job.source)
        if other != job.source:
            raise V2MError(f"{other} and {job.source} would both write {job.stem}.*",
                           "rename one of them (outputs are named after the video without its suffix)")
    for job in jobs:
        if artifacts.same_file(job.output("mp4"), job.source):
            raise V2MError(f"{job.source}: the muxed output would overwrite the input video",
                           "choose an output folder other than the input's folder")
    return jobs


def fingerprint(config: RunConfig, model_sha256: str | None) -> dict:
    """The settings a finished video is checked against on resume (the model by content, not by path)."""
    settings = to_dict(config)
    settings.pop("model")
    # devices (and batch sizes: the rows a step computes) differ only by float noise: moving to a GPU is no reason
    # to redo finished videos
    settings.pop("device")
    settings.pop("batch")
    return {"settings": settings, "model_sha256": model_sha256}


def is_done(job: VideoJob, expected: dict) -> bool:
    """True when the marker exists, matches the input and settings, and every output is present and intact."""
    try:
        marker = json.loads(job.marker.read_text())
    except (OSError, ValueError):
        return False
    if marker.get("version") != MARKER_VERSION or marker.get("fingerprint") != expected:
        return False
    if marker.get("source", {}).get("sha256") != artifacts.sha256_file(job.source):
        return False
    for name, recorded in marker.get("outputs", {}).items():
        path = job.stem.parent / name
        if not path.is_file() or path.stat().st_size != recorded.get("bytes"):
            return False
    return set(marker.get("outputs", {})) == {job.output(s).name for s in OUTPUTS}


def clear_partials(job: VideoJob) -> None:
    """Remove temp files left by a write that was killed mid-way. Atomic writes name them
    .STEM.XXXXXXXX.partSUFFIX (mkstemp's 8 random characters); matching exactly this video's output stems
    never touches another video's writes in flight (NAME vs NAME.x)."""
    import re

    folder = job.stem.parent
    if not folder.is_dir():
        return
    stems = "|".join(re.escape(Path(job.output(s).name).stem) for s in (*OUTPUTS, "done.json"))
    pattern = re.compile(rf"^\.({stems})\.[A-Za-z0-9_]{{8}}\.part")
    for stray in folder.iterdir():
        if pattern.match(stray.name):
            stray.unlink(missing_ok=True)


def write_marker(job: VideoJob, expected: dict, result: VideoResult, source: dict) -> None:
    """The completion marker, written after every output: what `is_done` checks on the next run."""
    outputs = {}
    for suffix in OUTPUTS:
        path = job.output(suffix)
        outputs[path.name] = {"bytes": path.stat().st_size, "sha256": artifacts.sha256_file(path)}
    marker = {"version": MARKER_VERSION, "source": source, "fingerprint": expected,
              "outputs": outputs, "seconds": result.seconds, "wall_seconds": result.wall, "duration": result.duration,
              "metrics": result.metrics, "tempo": result.tempo, "warning": result.warning,
              "made_by": {"host": socket.gethostname(), "pid": os.getpid()}}  # who did the work (claimed work)
    artifacts.atomic_write_bytes(job.marker, artifacts.dumps(marker))


def read_marker(job: VideoJob) -> dict:
    return json.loads(job.marker.read_text())


# ---------------------------------------------------------------- one process's shared resources

class Engine:
    """The model session (model, vocabulary, decoders), opened once per process on first use and reused across
    stages and videos; `recorded` is the config artifacts record, with the kernels that actually run.

    This is the seam between a video's CPU stages and generation: `run_video` asks an engine only for `vocab`,
    `recorded()` and `generate(controls)`. Here the model is in this process; stages/run/on_ray.py's engine
    hands the controls to a model actor instead (one model load per actor, serving many videos).
    """

    def __init__(self, config: RunConfig):
        self.config = config
        self._session: Session | None = None
        self._batcher: PieceBatcher | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = open_model(self.config.model, backend=self.config.backend, kernel=self.config.kernel,
                                       device=self.config.device)
        return self._session

    @property
    def vocab(self):
        return self.session.vocab

    def recorded(self) -> dict:
        return {**to_dict(self.config), "kernel": self.session.kernels()}

    @property
    def batcher(self) -> PieceBatcher | None:
        """With `batch` > 1 the videos in flight meet here to decode their pieces together (run/batcher.py)."""
        if self.config.batch > 1 and self._batcher is None and self.session.loaded.backend != "diffusion":
            session = self.session
            self._batcher = PieceBatcher(session.loaded.model, session.vocab, self.config.sampling(),
                                         rows=self.config.batch * self.config.candidates,
                                         compile=self.config.device.startswith("cuda"), decoders=session.decoders)
        return self._batcher

    def generate(self, controls: dict) -> tuple[dict, str | None]:
        """The tokens payload for `controls` (its `arrange` record included) and the decode engine that ran: alone,
        or batched with the other videos in flight (`batcher`); a diffusion checkpoint writes melody, bass and
        accompaniment from its roll (generate/diffusion.py)."""
        config, session = self.config, self.session
        record = arrangement_record(config.style, config.arrange, config.seed)
        style = config.style or DEFAULT_STYLE
        if session.loaded.backend == "diffusion":
            tokens = generate_diffusion(session.loaded.model, session.vocab, controls,
                                        diffusion_settings(config.steps, config.guidance), seed=config.seed)
        elif self.batcher is None:
            tokens = generate(session.loaded.model, session.vocab, controls, config.sampling(),
                              rerank=config.candidates > 1, compile=config.device.startswith("cuda"),
                              decoders=session.decoders, arrangement=record, style=style)
        else:
            request = prepare(session.vocab, controls, config.sampling(), style=style)
            tokens = finish(request, self.batcher.sample(request), session.vocab, rerank=config.candidates > 1,
                            arrangement=record)
        tokens["arrange"] = record
        return tokens, session.engine()


# ---------------------------------------------------------------- one video

class _Timer:
    """Times each stage of one video (seconds, wall clock; stages may overlap) and reports each as it starts."""

    def __init__(self, key: str, status: Status):
        self.key, self.status, self.seconds = key, status, {}
        self.started = time.perf_counter()

    def __call__(self, stage: str) -> "_Stage":
        self.status(self.key, stage)  # reported now, in the caller's order, whichever thread runs it
        return _Stage(self.seconds, stage)

    def later(self, stage: str, fn, *args):
        """Report `stage` now; return a callable running fn(*args) timed as `stage` (for another thread)."""
        timed = self(stage)

        def run():
            with timed:
                return fn(*args)
        return run

    def wall(self) -> float:
        return round(time.perf_counter() - self.started, 3)


class _Stage:
    def __init__(self, seconds: dict, stage: str):
        self.into, self.stage = seconds, stage

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        self.into[self.stage] = round(time.perf_counter() - self.started, 3)


def run_video(job: VideoJob, engine: Engine, expected: dict, status: Status | None = None) -> VideoResult:
    """Make every output of one video, then its marker. Raises V2MError on a bad input."""
    config = engine.config
    timer = _Timer(job.key, status or (lambda key, what: None))
    source = artifacts.source_of(job.source)
    recorded = engine.recorded()

    def save(suffix: str, fmt: str, data: dict, stage: str, **more) -> None:
        artifact = artifacts.make_artifact(fmt, data, stage=stage, config={**recorded, **more}, seed=config.seed,
                                           source=source)
        artifacts.write_artifact(artifact, job.output(suffix), force=True)  # atomic: temp file + rename

    with timer("rhythm"):
        rhythm_artifact = extract_rhythm(str(job.source), config.rhythm())
        rhythm = rhythm_artifact["data"]
        artifacts.write_artifact(rhythm_artifact, job.output("rhythm.json"), force=True)
    vocab = engine.vocab
    with timer("controls"):
        controls = controls_from_rhythm(rhythm, vocab)
        save("controls.json", "v2m.controls", controls, "encode-tokens")
    with timer("generate"):
        tokens, decode_engine = engine.generate(controls)
        save("tokens.json", "v2m.tokens", tokens, "generate", engine=decode_engine)
    with timer("decode"):
        # the recorded settings, not the style's name: exactly what the tokens artifact says, custom styles included
        score, melody = decode.music_score(tokens, vocab)
        artifacts.atomic_write_bytes(job.output("mid"), decode.midi_bytes(score))
    with timer("render"):
        # atomic, like every write here; as long as the video
        decode.render_wav(score, job.output("wav"), soundfont=config.soundfont, length=decode.music_end(tokens))
    with ThreadPoolExecutor(max_workers=1) as pool:  # leaving waits for the mux, whatever evaluate does
        # ffmpeg's AAC encode (~1 s per 30 s of music, one core) runs beside evaluate, which reads only the WAV
        muxing = pool.submit(timer.later("mux", decode.mux, job.source, job.output("wav"), job.output("mp4")))
        report = _evaluate(job, rhythm, controls, score, melody, timer)
        muxing.result()
        save("report.json", "v2m.report", report, "evaluate")
    result = VideoResult(job.key, str(job.source), "done", seconds=timer.seconds, duration=float(rhythm["duration"]),
                         metrics={k: v for k, v in report["metrics"].items() if isinstance(v, (int, float))},
                         wall=timer.wall(), tempo=rhythm["tempo"], warning=grid_warning(rhythm, config.sync))
    write_marker(job, expected, result, source)
    return result


def _evaluate(job: VideoJob, rhythm: dict, controls: dict, score, melody, timer: _Timer) -> dict:
    """The run's report: the heard mix and the melody line against the video's beats."""
    with timer("evaluate"):
        reference = evaluate.reference_from_rhythm(rhythm)
        # beat_f1 judges the beats heard in the render: the tempo map sits on the video's beats by construction
        metrics, labels = evaluate.evaluate_pair(reference, evaluate.music_from_render(score, job.output("wav")))
        # the line alone, with how well it kept the requested controls (density, accents) per bar
        melody_music = evaluate.music_from_score(melody, kind="tokens", requested_controls=controls)
        melody_metrics, melody_labels = evaluate.evaluate_pair(reference, melody_music)
        return {"mode": "rhythm", "metrics": evaluate.clean(metrics), "labels": labels,
                "melody": {"metrics": evaluate.clean(melody_metrics), "labels": melody_labels}, "gates": []}


def finished(job: VideoJob, status: Status) -> VideoResult:
    """The result of a video whose marker is valid (made by an earlier run, or by another process)."""
    marker = read_marker(job)
    status(job.key, "skipped")
    return VideoResult(job.key, str(job.source), "skipped", seconds=marker.get("seconds", {}),
                       duration=marker.get("duration"), metrics=marker.get("metrics", {}),
                       wall=marker.get("wall_seconds"), tempo=marker.get("tempo", {}), warning=marker.get("warning"))


def process(job: VideoJob, engine: Engine, expected: dict, force: bool, status: Status | None = None,
            lease: float = claims.LEASE_SECONDS) -> VideoResult:
    """run_video with resume, claimed work and error isolation: never raises for a bad input, returns the outcome:
    done, skipped (finished earlier), failed, or claimed (another live process is making it: look again later)."""
    say = status or (lambda key, what: None)
    if not force and is_done(job, expected):
        return finished(job, say)
    try:
        claim = claims.take(job.stem, lease)
    except OSError as e:
        say(job.key, "failed")
        return VideoResult(job.key, str(job.source), "failed", error=f"cannot claim {job.key}: {e}")
    if isinstance(claim, str):
        return VideoResult(job.key, str(job.source), "claimed", error=f"being made by {claim}")
    try:
        with claim:
            if not force and is_done(job, expected):  # finished by another process between our look and our claim
                return finished(job, say)
            job.marker.unlink(missing_ok=True)  # a stale marker must never vouch for new, half-written outputs
            clear_partials(job)
            result = run_video(job, engine, expected, say)
        say(job.key, "done")
        return result
    except V2MError as e:
        say(job.key, "failed")
        return VideoResult(job.key, str(job.source), "failed", error=e.one_line())
    except Exception as e:  # an unexpected failure is isolated too, and named
        say(job.key, "failed")
        return VideoResult(job.key, str(job.source), "failed", error=f"internal error: {type(e).__name__}: {e}")
