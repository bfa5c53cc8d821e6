"""extract-rhythm: the rhythm of a video (or of audio) as a `v2m.rhythm` payload (docs/ARTIFACTS.md).

Pure functions on in-memory data: `rhythm_from_frames` takes any iterable of frame chunks (from
`stream.stream_frames`, or arrays made in a test), `rhythm_from_audio` takes samples. Both
reduce their input to an onset envelope and share `rhythm_from_envelope` for tempo, beats and
meter, so music and video are scored on one scale.

Scene cuts are found on colour-histogram jumps that persist (a flash does not), then the onset
envelope is blanked around them: a cut is the biggest "motion" of all, and must not become a beat.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Iterable

if "numpy" not in sys.modules:
    # numpy's OpenBLAS starts a thread per core that spins at start-up; nothing here multiplies large
    # matrices, and on two cores that spin takes CPU from ffmpeg (extract-rhythm 720p: ~0.15 s CPU,
    # ~3 % of the wall time). Set only if numpy is not loaded yet, and never over the user's choice.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from v2m import artifacts
from v2m.errors import V2MError
from v2m.stages.rhythm import scenes as scene_mod
from v2m.stages.rhythm import stream
from v2m.stages.rhythm import tempo as tempo_mod
from v2m.stages.rhythm.audio import onset_strength, spectral_centroid
from v2m.stages.rhythm.motion import FrameAnalyzer, FrameFeatures

METHODS = ("flow", "diff")
MOTION_SCALE = 0.1  # frame widths per second that map to motion 0.63 (1 - 1/e)


@dataclass(frozen=True)
class RhythmConfig:
    """Settings of extract-rhythm; recorded in the artifact. Times in seconds, tempo in BPM."""

    method: str = "flow"
    analysis_width: int = 128  # px: frames are decoded this wide (aspect kept)
    max_rate: float = 30.0  # analysis frames per second at most (a 60 fps video is read at 30)
    tempo_range: tuple[float, float] = (60.0, 180.0)
    tempo: float | None = None  # a user hint: overrides the estimate
    meter: int | None = None  # beats per bar; None = estimate
    start: float = 0.0
    duration: float | None = None
    cut_threshold: float = 0.25  # colour-histogram distance (0..1) that counts as a hard cut
    max_segment: float = 8.0  # affect segments are split so none is longer
    tightness: float = 100.0  # beat-tracking DP: how strongly beats keep to the tempo
    min_duration: float = 2.0  # shorter inputs have no tempo to estimate (unless a tempo hint is given)
    sync: str = "auto"  # auto: each scene's own pulse where confident, else a grid planned on cuts; pulse; cuts

    def check(self) -> None:
        lo, hi = self.tempo_range
        if self.method not in METHODS:
            raise V2MError(f"unknown method '{self.method}'", f"use one of: {', '.join(METHODS)}")
        if not (20 <= lo < hi <= 400):
            raise V2MError(f"tempo range {lo:g},{hi:g} is not valid", "give LOW,HIGH in BPM with 20 <= LOW < HIGH <= 400, e.g. 60,180")
        if self.tempo is not None and not 20 <= self.tempo <= 400:
            raise V2MError(f"tempo {self.tempo:g} BPM is out of range", "give a tempo between 20 and 400 BPM")
        if self.meter is not None and not 1 <= self.meter <= 16:
            raise V2MError(f"meter {self.meter} is not valid", "give the beats per bar, 1..16")
        if self.sync not in scene_mod.SYNCS:
            raise V2MError(f"unknown sync '{self.sync}'", f"use one of: {', '.join(scene_mod.SYNCS)}")
        if self.tempo is not None and not lo <= self.tempo <= hi:
            raise V2MError(f"--tempo {self.tempo:g} BPM is outside the tempo range {lo:g}..{hi:g}",
                           "give a tempo inside the range, or widen it with --tempo-range")
        if self.tempo is not None and self.sync == "cuts":
            raise V2MError("--sync cuts plans its own tempo from the cuts and the motion; it cannot take --tempo",
                           "drop --tempo, or use --sync pulse (the given tempo throughout) or auto")
        if self.start < 0 or (self.duration is not None and self.duration <= 0):
            raise V2MError("--start must be >= 0 and --duration > 0")


def rhythm_from_frames(chunks: Iterable[np.ndarray], rate: float, source_fps: float | None,
                       config: RhythmConfig = RhythmConfig()) -> dict:
    """The rhythm payload of a video given as chunks of frames (n, H, W, 3) uint8 at `rate` frames/s."""
    analyzer = FrameAnalyzer(config.method, rate, config.analysis_width)
    for chunk in chunks:
        analyzer.feed(chunk)
    features = analyzer.features
    frames = len(features.brightness)
    if frames < 2:
        raise V2MError(f"the video has {frames} frame(s): too short to read any motion")
    series = features.arrays()
    cuts = detect_cuts(series["hist_jump"], series["hist_step"], rate, config.cut_threshold)
    envelope = onset_envelope(series["onset"], rate, cuts, blank=1)
    payload = {"kind": "video", "duration": round(frames / rate, 3), "source_fps": source_fps, "frame_rate": rate,
               "method": config.method}
    affect = segments(features, series, cuts, rate, config.max_segment)
    payload.update(rhythm_from_envelope(envelope, rate, config, cuts=cuts, raw=(series["onset"], series["motion"]),
                                        affect=affect))
    payload["cuts"] = [round(c / rate, 3) for c in cuts]
    payload["segments"] = affect
    return payload


AUDIO_HOP, AUDIO_FFT = 512, 2048  # samples at 22.05 kHz: the frames `rhythm_from_audio` reads audio in


def rhythm_from_audio(samples: np.ndarray, sample_rate: int, config: RhythmConfig = RhythmConfig()) -> dict:
    """The rhythm payload of mono audio: the onset envelope is the spectral flux of stages/rhythm/audio.py
    (librosa's onset strength)."""
    hop = AUDIO_HOP
    strength = onset_strength(samples, sample_rate, hop, AUDIO_FFT)
    centroid = spectral_centroid(samples, sample_rate, hop, AUDIO_FFT)
    return rhythm_from_audio_features(strength, centroid, len(samples) / sample_rate, sample_rate / hop, config)


def rhythm_from_audio_features(strength: np.ndarray, centroid: np.ndarray, duration: float, rate: float,
                               config: RhythmConfig = RhythmConfig()) -> dict:
    """The rhythm payload of audio from its onset strength and spectral centroid per frame (`rate` frames per
    second, AUDIO_HOP/AUDIO_FFT frames): what `rhythm_from_audio` computes from samples, and evaluate from a WAV
    read in blocks (stages/evaluate/audio_stream.py)."""
    n = int(round(duration * rate))
    strength = np.pad(strength, (0, max(0, n - len(strength))))[:n]
    envelope = onset_envelope(strength, rate, [], blank=0)
    payload = {"kind": "audio", "duration": round(duration, 3), "source_fps": None, "frame_rate": round(rate, 6),
               "method": "audio"}
    payload.update(rhythm_from_envelope(envelope, rate, config))
    payload["cuts"] = []
    # affect of sound, by analogy: motion = onset activity, brightness = spectral centroid (the timbre
    # "brightness" of psychoacoustics) over 4 kHz, saturation = none (sound has no colour)
    payload["segments"] = []
    for start, end in _split(0.0, round(duration, 3), config.max_segment):
        lo, hi = int(start * rate), max(int(start * rate) + 1, int(end * rate))
        payload["segments"].append({
            "start": start, "end": end,
            "motion": round(float(np.clip(2 * envelope[lo:hi].mean(), 0, 1)) if hi <= len(envelope) and lo < hi else 0.0, 3),
            "brightness": round(float(np.clip(np.mean(centroid[lo:hi]) / 4000.0, 0, 1)) if lo < len(centroid) else 0.0, 3),
            "saturation": 0.0})
    return payload


def _running(statistic, values: np.ndarray, size: int) -> np.ndarray:
    """`statistic` over a centred window of `size` samples, edges padded with the end values.

    numpy only: importing scipy.ndimage for three filters would cost more start-up time than they run.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    half = size // 2
    padded = np.pad(values, (half, size - 1 - half), mode="edge")
    return statistic(sliding_window_view(padded, size), axis=1)


def onset_envelope(raw: np.ndarray, rate: float, cuts: list[int], blank: int) -> np.ndarray:
    """Raw onset strength → the artifact's envelope: cuts blanked, floor removed, 0..1.

    The floor (a running median over ~1 s) takes out sensor noise and steady motion; the scale is the
    99.5th percentile, so one stray spike cannot flatten the rest (values above it clip to 1).
    """
    envelope = np.asarray(raw, np.float64).copy()
    for c in cuts:
        envelope[max(0, c - blank):c + blank + 1] = 0.0
    if len(envelope) > 3:
        envelope = np.maximum(envelope - _running(np.median, envelope, max(3, int(rate) | 1)), 0.0)
    scale = np.percentile(envelope, 99.5) if len(envelope) else 0.0
    return np.clip(envelope / scale, 0.0, 1.0) if scale > 0 else envelope


def level(envelope: np.ndarray, rate: float, window: float = 2.5) -> np.ndarray:
    """Automatic gain control for tracking: divide by a smoothed running maximum (~`window` s).

    Shots differ in contrast (a flash on a bright wall is weaker than on a dark one); beats are
    onsets relative to their own surroundings, so tempo and beats are found on the levelled envelope.
    The artifact keeps the global scale (loud and quiet passages stay distinguishable downstream).
    """
    if len(envelope) < 3 or envelope.max() <= 0:
        return envelope
    size = max(3, int(window * rate))
    gain = _running(np.mean, _running(np.max, envelope, size), size)
    return envelope / np.maximum(gain, 0.05 * envelope.max())


def rhythm_from_envelope(envelope: np.ndarray, rate: float, config: RhythmConfig, *, cuts: list[int] = (),
                         raw: tuple[np.ndarray, np.ndarray] | None = None, affect: list[dict] | None = None) -> dict:
    """Scenes, tempo, beats, strengths, meter and downbeats from a normalised envelope (the shared core).

    `cuts` (frames) split scenes and anchor planned grids; `raw` (the unnormalised onset strength and motion
    magnitude per frame) gates the confidence on how much anything moves; `affect` (segments with "motion") sets a planned grid's pace.
    """
    n = len(envelope)
    duration = n / rate
    if config.tempo is None and duration < config.min_duration:
        raise V2MError(f"only {duration:.2f} s to analyse: too short to estimate a tempo (at least {config.min_duration:g} s)",
                       "pass --tempo BPM to lay a beat grid on a short clip")
    levelled = level(envelope, rate)
    cuts = [int(c) for c in cuts]
    method = config.method if raw is not None else "audio"
    bounds = [(0, n)] if config.tempo is not None else scene_mod.spans(n, rate, cuts, levelled, config.tempo_range,
                                                                       method)
    found = [scene_mod.read_pulse(scene_mod.Scene(a, b), levelled, envelope, rate, config,
                                  scene_mod.activity_gate(*(None, None) if raw is None else (raw[0][a:b], raw[1][a:b]),
                                                          method=config.method))
             for a, b in bounds]
    grid = _grid(found, cuts, rate, envelope, affect, config, method)
    beats = np.concatenate([s.beats for s in grid]) if grid else np.zeros(0)
    downbeats = np.concatenate([s.beats[s.phase::s.meter] for s in grid]) if grid else np.zeros(0)
    strengths = tempo_mod.beat_strengths(envelope, rate, beats)
    longest = max(grid, key=lambda s: s.end - s.start)
    weights = np.array([s.end - s.start for s in grid], dtype=np.float64)
    confidence = float(np.dot(weights, [s.confidence for s in grid]) / weights.sum())
    planned = float(weights[[s.sync == "cuts" for s in grid]].sum() / weights.sum())
    bpm = longest.bpm if len(grid) == 1 else 60.0 / float(np.median(np.diff(beats))) if len(beats) > 1 else longest.bpm
    source = "hint" if config.tempo is not None else "planned" if planned == 1.0 else "estimated"
    return {
        "envelope": [round(float(v), 4) for v in envelope],
        "tempo": {"bpm": round(bpm, 2), "confidence": round(confidence, 3), "half": round(bpm / 2, 2),
                  "double": round(bpm * 2, 2), "source": source, "planned": round(planned, 3)},
        "beats": [round(float(b), 3) for b in beats],
        "beat_strength": [round(float(s), 3) for s in strengths],
        "meter": int(longest.meter),
        "downbeats": [round(float(b), 3) for b in downbeats],
        "scenes": [{"start": round(s.start / rate, 3), "end": round(s.end / rate, 3), "bpm": round(s.bpm, 2),
                    "confidence": round(s.confidence, 3), "meter": int(s.meter), "sync": s.sync} for s in grid],
    }


def summary(data: dict) -> str:
    """One line on a rhythm payload: tempo and how it was found, confidence, beats, meter, scenes, cuts."""
    tempo = data["tempo"]
    how = {"hint": "given", "planned": "planned on the cuts"}.get(tempo["source"], "read from the motion")
    if tempo["source"] == "estimated" and tempo.get("planned"):
        how += f", {tempo['planned']:.0%} of it planned on the cuts"
    scenes = data.get("scenes", [])
    return (f"{tempo['bpm']:.1f} BPM ({how}; confidence {tempo['confidence']:.2f}), {len(data['beats'])} beats in "
            f"{data['meter']}, {len(scenes)} scene{'s' * (len(scenes) != 1)}, {len(data['cuts'])} cuts")


def grid_warning(data: dict, sync: str = "auto") -> str | None:
    """A one-line warning when the beat grid is a guess (planned on the cuts for a weak pulse; not when asked
    for with --sync cuts), else None."""
    tempo = data["tempo"]
    if sync != "auto" or tempo["source"] == "hint" or not tempo.get("planned"):
        return None
    share = "the whole video" if tempo["planned"] >= 0.999 else f"{tempo['planned']:.0%} of the video"
    return (f"no steady pulse in {share} (confidence {tempo['confidence']:.2f}): its beats are planned on the cuts "
            f"and motion hits, not read; give --tempo BPM if you know it, or --sync pulse to follow the motion anyway")


def _grid(found: list, cuts: list[int], rate: float, envelope: np.ndarray, affect: list[dict] | None,
          config: RhythmConfig, method: str) -> list:
    """The scenes whose beats make the grid: a confident scene keeps its pulse, a run of weak ones is planned
    on its cuts (stages/rhythm/scenes.py); with --sync pulse every scene keeps (or borrows) a pulse."""
    def weak(scene) -> bool:
        if config.sync == "cuts":
            return True
        if config.sync == "pulse":
            return False
        return not scene_mod.confident(scene, rate, method)

    def pace(t: float) -> float:
        return next((seg["motion"] for seg in affect or [] if seg["start"] <= t < seg["end"]), 0.5)

    out, run = [], []
    for scene in found + [None]:
        if scene is not None and weak(scene):
            run.append(scene)
            continue
        if run:
            before = out[-1].bpm if out else None
            out.extend(scene_mod.planned_scenes(run, cuts, rate, envelope, pace, config.meter or 4, before))
            run = []
        if scene is None:
            break
        if scene.beats is None or len(scene.beats) < 2:  # --sync pulse on a scene too short to read: borrow a tempo
            bpm = out[-1].bpm if out else next((s.bpm for s in found if s.beats is not None), 100.0)
            scene.beats = scene.start / rate + np.arange(0.0, (scene.end - scene.start) / rate, 60.0 / bpm)
            scene.bpm, scene.meter, scene.phase = bpm, config.meter or 4, 0
        out.append(scene)
    # a pulse scene's beats stop short of the next scene's first beat (no two beats closer than a third of a period)
    for a, b in zip(out[:-1], out[1:]):
        if len(a.beats) and len(b.beats):
            period = 60.0 / a.bpm if math.isfinite(a.bpm) and a.bpm > 0 else 0.5
            keep = a.beats < b.beats[0] - period / 3
            a.beats = a.beats[keep]
            a.phase = min(a.phase, max(len(a.beats) - 1, 0))
    return [s for s in out if s.beats is not None and len(s.beats)]


def detect_cuts(jump: np.ndarray, step: np.ndarray, rate: float, threshold: float) -> list[int]:
    """Frames that start a new shot: a histogram jump that is large, a local peak, well above its
    surroundings (busy footage has a higher floor), and that persists three frames on (flashes do not)."""
    cuts: list[int] = []
    radius = max(2, int(rate * 0.25))
    for k in np.nonzero(jump >= threshold)[0]:
        lo, hi = max(1, k - radius), min(len(jump), k + radius + 1)
        neighbourhood = np.concatenate([jump[lo:k], jump[k + 1:hi]])
        if jump[k] < jump[lo:hi].max():
            continue
        floor = np.median(neighbourhood) if len(neighbourhood) else 0.0
        persists = step[k] >= 0.5 * jump[k] if k + 2 < len(step) else True
        if jump[k] >= 3 * floor and persists and (not cuts or k - cuts[-1] > radius):
            cuts.append(int(k))
    return cuts


def _split(start: float, end: float, longest: float) -> list[tuple[float, float]]:
    parts = max(1, math.ceil((end - start) / longest - 1e-9))
    edges = np.linspace(start, end, parts + 1)
    return [(round(float(a), 3), round(float(b), 3)) for a, b in zip(edges[:-1], edges[1:])]


def segments(features: FrameFeatures, series: dict, cuts: list[int], rate: float, longest: float) -> list[dict]:
    """One affect record per shot (split to at most `longest` s): motion, brightness, saturation, 0..1."""
    n = len(series["brightness"])
    bounds = [0] + list(cuts) + [n]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        for start, end in _split(a / rate, b / rate, longest):
            lo, hi = int(round(start * rate)), max(int(round(start * rate)) + 1, int(round(end * rate)))
            # skip the frames that straddle a cut: their motion is the cut itself
            motion = series["motion"][lo + 1:hi] if hi - lo > 2 else series["motion"][lo:hi]
            out.append({"start": start, "end": end,
                        "motion": round(float(1 - math.exp(-float(np.mean(motion)) / MOTION_SCALE)), 3),
                        "brightness": round(float(np.mean(series["brightness"][lo:hi])), 3),
                        "saturation": round(float(np.mean(series["saturation"][lo:hi])), 3)})
    return out


# ---------------------------------------------------------------- files (the I/O edge, used by the CLI and `run`)

def _in_background(function, *args):
    """Run `function(*args)` in a thread; returns a callable that waits and gives its result (or raises its error).

    For work that frees the GIL (hashlib on large reads): on two cores it fills the gaps of the
    decode instead of adding to the end of the run.
    """
    import threading

    result: list = []

    def work() -> None:
        try:
            result.append((True, function(*args)))
        except BaseException as e:  # handed to the caller, raised there
            result.append((False, e))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def wait():
        thread.join()
        ok, value = result[0]
        if not ok:
            raise value
        return value

    return wait


def extract_rhythm(path: str, config: RhythmConfig = RhythmConfig(), say=None, warn=None) -> dict:
    """A media file → the complete `v2m.rhythm` artifact (header + payload).

    Video is stream-decoded at low resolution; a file with audio but no video is analysed as audio
    (`say` — a callable taking a message — is told so). Raises V2MError for anything unreadable.
    """
    from dataclasses import asdict, replace

    config.check()
    # sha256 of the input, read on the spare core while ffprobe and ffmpeg start (an error surfaces below first)
    source = _in_background(artifacts.source_of, path)
    info = stream.probe(path)
    available = max(0.0, info.duration - config.start) if info.duration else None
    if info.duration and config.start >= info.duration:
        raise V2MError(f"{path}: --start {config.start:g} s is past the end ({info.duration:.2f} s)")
    length = config.duration if config.duration is not None else available
    if info.kind == "audio":
        if say:
            say(f"{path}: no video stream, analysing it as audio (onset envelope of the sound)")
        samples = stream.read_audio(info, 22050, config.start, config.duration)
        payload = rhythm_from_audio(samples, 22050, config)
    else:
        rate = min(info.fps or config.max_rate, config.max_rate)
        size = stream.analysis_size(info, config.analysis_width)
        if say:
            say(f"{path}: {info.width}x{info.height} at {info.fps or 0:.3g} fps, "
                f"{length or 0:.1f} s → {config.method} analysis at {size[0]}x{size[1]}, {rate:.3g} frames/s")
        with stream.stream_frames(info, size, rate, config.start, config.duration) as chunks:
            payload = rhythm_from_frames(chunks, round(rate, 6), info.fps and round(info.fps, 6), config)
        if warn and length and payload["duration"] < length - max(0.5, 0.05 * length):
            warn(f"{path}: decoded only {payload['duration']:.1f} s of {length:.1f} s; the file looks truncated")
    recorded = asdict(replace(config, method=payload["method"]))
    recorded["tempo_range"] = list(config.tempo_range)
    return artifacts.make_artifact("v2m.rhythm", payload, stage="extract-rhythm", config=recorded,
                                   source=source())
