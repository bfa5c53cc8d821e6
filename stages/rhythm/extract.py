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
    payload.update(rhythm_from_envelope(envelope, rate, config))
    payload["cuts"] = [round(c / rate, 3) for c in cuts]
    payload["segments"] = segments(features, series, cuts, rate, config.max_segment)
    return payload


def rhythm_from_audio(samples: np.ndarray, sample_rate: int, config: RhythmConfig = RhythmConfig()) -> dict:
    """The rhythm payload of mono audio: the onset envelope is the spectral flux of stages/rhythm/audio.py
    (librosa's onset strength)."""
    hop = 512
    duration = len(samples) / sample_rate
    strength = onset_strength(samples, sample_rate, hop, 2048)
    rate = sample_rate / hop
    n = int(round(duration * rate))
    strength = np.pad(strength, (0, max(0, n - len(strength))))[:n]
    envelope = onset_envelope(strength, rate, [], blank=0)
    payload = {"kind": "audio", "duration": round(duration, 3), "source_fps": None, "frame_rate": round(rate, 6),
               "method": "audio"}
    payload.update(rhythm_from_envelope(envelope, rate, config))
    payload["cuts"] = []
    # affect of sound, by analogy: motion = onset activity, brightness = spectral centroid (the timbre
    # "brightness" of psychoacoustics) over 4 kHz, saturation = none (sound has no colour)
    centroid = spectral_centroid(samples, sample_rate, hop)
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


def rhythm_from_envelope(envelope: np.ndarray, rate: float, config: RhythmConfig) -> dict:
    """Tempo, beats, strengths, meter and downbeats from a normalised envelope (the shared core)."""
    duration = len(envelope) / rate
    if config.tempo is None and duration < config.min_duration:
        raise V2MError(f"only {duration:.2f} s to analyse: too short to estimate a tempo (at least {config.min_duration:g} s)",
                       "pass --tempo BPM to lay a beat grid on a short clip")
    levelled = level(envelope, rate)
    if config.tempo is not None:
        estimate = tempo_mod.Tempo(config.tempo, 1.0)
    else:
        estimate = tempo_mod.estimate_tempo(levelled, rate, config.tempo_range)
    beats = tempo_mod.track_beats(levelled, rate, estimate.bpm, config.tightness)
    if config.tempo is None:  # a second pass on the fitted grid's tempo: finer than the autocorrelation's lag step
        refined = tempo_mod.grid_bpm(beats, estimate.bpm)
        if abs(refined / estimate.bpm - 1) < 0.04:
            beats = tempo_mod.track_beats(levelled, rate, refined, config.tightness)
    if config.tempo is not None and len(beats) < 2:  # nothing to lock onto: a plain grid at the hinted tempo
        beats = np.arange(0.0, duration, 60.0 / config.tempo)
    bpm = estimate.bpm if config.tempo is not None else tempo_mod.grid_bpm(beats, estimate.bpm)
    strengths = tempo_mod.beat_strengths(envelope, rate, beats)
    meter, phase = (config.meter, 0) if config.meter else tempo_mod.estimate_meter(strengths)
    if config.meter and len(strengths) >= config.meter * 2:  # meter given: still find where bars start
        phase = int(np.argmax([strengths[p::config.meter].mean() for p in range(config.meter)]))
    return {
        "envelope": [round(float(v), 4) for v in envelope],
        "tempo": {"bpm": round(bpm, 2), "confidence": round(estimate.confidence, 3), "half": round(bpm / 2, 2),
                  "double": round(bpm * 2, 2), "source": "hint" if config.tempo is not None else "estimated"},
        "beats": [round(float(b), 3) for b in beats],
        "beat_strength": [round(float(s), 3) for s in strengths],
        "meter": int(meter),
        "downbeats": [round(float(b), 3) for b in beats[phase::meter]],
    }


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
