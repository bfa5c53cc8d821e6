"""evaluate: rhythm agreement, music statistics and folder summaries (gates for CI: evaluate/gates.py).

What is measured depends on what is given (the CLI sniffs files by content):

- a video's rhythm (`v2m.rhythm`, or the beat grid carried by `v2m.controls`) + music
  (MIDI, WAV or `v2m.tokens`) → mode "rhythm": rhythm metrics, plus music statistics for
  symbolic music, plus control accuracy when requested controls are known;
- music alone (MIDI or tokens) → mode "music": music statistics;
- a folder (e.g. `v2m run`'s output: NAME.rhythm.json, NAME.mid, NAME.wav, ...) → mode
  "folder": one row per NAME and a summary (mean, median, worst);
- a model + corpus → mode "model" (evaluate/model_metrics.py).

The functions here work on in-memory objects (`Music`, rhythm payload dicts); the file edge
(inputs sniffed by content, folders grouped by name) is evaluate/inputs.py, shared by the CLI
and folder mode. Audio is analysed block by block (evaluate/audio_stream.py: memory flat in its length);
`read_audio` reads a file whole (codecs soundfile cannot read, and generate's candidate ranking).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from v2m.errors import V2MError
from v2m.stages.evaluate import beat_metrics as mr
from v2m.stages.evaluate.audio_stream import Heard, hear, hear_file, split
from v2m.stages.evaluate.music_metrics import music_statistics as stats
from v2m.stages.evaluate.structure import structure_metrics
from v2m.stages.rhythm import stream
from v2m.stages.rhythm.audio import decimate
from v2m.stages.rhythm.extract import RhythmConfig, rhythm_from_audio
from v2m.stages.tokens.controls import analyse_score, bar_controls
from v2m.stages.tokens.vocab import load_tokenizer

# name → direction: +1 higher is better, -1 lower is better, 0 neither (a description, not a grade).
METRICS: dict[str, int] = {
    # rhythm (stages/evaluate/beat_metrics.py): beat_* = the music's beats vs the video's (label music_beats says from
    # where: tempo map or tracked in audio); onset_*, bcs, bhs, beat_align* = the music's note onsets vs the video's beats
    "beat_f1": 1, "beat_precision": 1, "beat_recall": 1, "beat_offset_ms": 0,
    "onset_f1": 1, "onset_precision": 1, "onset_recall": 1, "onset_offset_ms": 0,
    "bcs": 0, "bhs": 1, "beat_align": 1, "beat_align_video": 1,
    "cut_hit": 1, "cut_on_beat": 1, "music_onsets": 0, "music_beats": 0, "video_beats": 0, "music_bpm": 0,
    "video_bpm": 0,
    # per scene (a montage's tempi): the music's beats vs the video's in each scene, mean and worst
    "scene_beat_f1": 1, "scene_beat_f1_worst": 1, "scenes": 0,
    "tempo_ratio": 0, "tempo_same": 1, "tempo_related": 1,
    # control accuracy
    "density_accuracy": 1, "density_within1": 1, "strength_accuracy": 1, "bars_compared": 0,
    # music statistics (stages/evaluate/music_metrics.py)
    "pitch_class_entropy": 0, "scale_consistency": 1, "groove_consistency": 1, "empty_bar_rate": -1,
    "polyphony": 0, "pitch_range": 0, "notes": 0, "note_density": 0, "notes_per_beat": 0,
    # the melody's structure (stages/evaluate/structure.py): descriptions, read against the corpus range beside them
    "bar_repeat_exact": 0, "bar_repeat_transposed": 0, "bar_varied": 0, "bar_repeated_or_varied": 0,
    "motif_recurrence": 0, "melody_notes_per_beat": 0, "phrase_start_rest": 0, "other_bar_rest": 0, "melody_bars": 0,
    # model (stages/evaluate/model_metrics.py)
    "nll": -1, "ppl": -1, "ref_nll": 0, "kl": -1, "nll_delta": -1, "nll_delta_abs": -1, "tokens_evaluated": 0,
    "context": 0, "params": 0, "size_mb": -1, "bits_per_param": -1, "size_ratio": -1, "prefill_tok_s": 1,
    "decode_tok_s": 1, "prefill_speedup": 1, "decode_speedup": 1,
    # diffusion model (stages/diffusion_eval.py): vs the float reference from the same seed and noise
    "v_err": -1, "note_f1": 1, "sample_ms_step": -1, "sample_speedup": 1,
    # folder
    "files": 0, "failed": -1,
}
STATISTICS = ("mean", "median", "worst")
# names a gate may still use from before the beat/onset split: what they are called now
RENAMED = {"grid_beat_f1": "beat_f1 (the music's beats vs the video's; before, beat_f1 meant onsets: now onset_f1)"}
BEATS_FROM_TEMPO_MAP = "tempo map"
BEATS_FROM_AUDIO = "tracked in audio (extract-rhythm's tracker)"
SAMPLE_RATE = 22050  # Hz, audio is read at this rate for onset detection
CUT_ON_BEAT = 0.035  # s: a cut this close to one of the music's beats is on the beat


@dataclass(frozen=True)
class Music:
    """Music reduced to what the metrics need. Times in seconds.

    `onsets`: note onsets merged within 30 ms (symbolic) or detected onsets (audio);
    `beats`: the music's own beats, from where `beats_source` says: the tempo map (symbolic) or
    extract-rhythm's reading of audio (audio, or a symbolic piece paired with its render: `with_heard_beats`);
    `score`: the symusic.Score for symbolic music (None for audio).
    """

    kind: str  # "midi", "tokens" or "audio"
    onsets: np.ndarray
    beats: np.ndarray
    bpm: float
    duration: float
    score: object = None
    requested_controls: dict | None = None  # the controls data a tokens artifact was generated from
    beats_source: str = BEATS_FROM_TEMPO_MAP


@dataclass(frozen=True)
class Reference:
    """The video side: beat times, duration (s) and, for the plot, its motion envelope and cuts."""

    beats: np.ndarray
    duration: float
    bpm: float | None
    cuts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    downbeats: np.ndarray = field(default_factory=lambda: np.zeros(0))
    envelope: np.ndarray = field(default_factory=lambda: np.zeros(0))
    frame_rate: float = 0.0
    scenes: list = field(default_factory=list)  # the rhythm's scenes: start, end (s), bpm, confidence, sync
    planned: float = 0.0  # share of the duration whose grid was planned on cuts (no steady pulse): a guess


def reference_from_rhythm(data: dict) -> Reference:
    """A `v2m.rhythm` payload → Reference."""
    tempo = data.get("tempo") or {}
    return Reference(beats=mr.as_times(data.get("beats")), duration=float(data.get("duration", 0.0)),
                     bpm=tempo.get("bpm"), cuts=mr.as_times(data.get("cuts")), downbeats=mr.as_times(data.get("downbeats")),
                     envelope=np.asarray(data.get("envelope") or [], dtype=np.float64),
                     frame_rate=float(data.get("frame_rate") or 0.0), scenes=list(data.get("scenes") or []),
                     planned=float(tempo.get("planned") or 0.0))


def reference_from_controls(data: dict) -> Reference:
    """A `v2m.controls` payload → Reference (its beat grid, and the rhythm it carries downstream)."""
    rhythm = data.get("rhythm") or {}
    beats = mr.as_times(data.get("beat_times"))
    return Reference(beats=beats, duration=float(data.get("duration") or (beats[-1] if beats.size else 0.0)),
                     bpm=data.get("tempo_bpm"), cuts=mr.as_times(rhythm.get("cuts")),
                     downbeats=mr.as_times(data.get("downbeats")),
                     envelope=np.asarray(rhythm.get("envelope") or [], dtype=np.float64),
                     frame_rate=float(rhythm.get("frame_rate") or 0.0), scenes=list(rhythm.get("scenes") or []),
                     planned=float(rhythm.get("planned") or 0.0))


# ---------------------------------------------------------------- music from scores and audio

def music_from_score(score, kind: str = "midi", requested_controls: dict | None = None, name: str = "music") -> Music:
    """A symusic.Score → Music: every note's onset (drums included: they are heard), merged within 30 ms."""
    seconds = score.to("second")
    onsets = [track.notes.numpy()["time"] for track in seconds.tracks if len(track.notes)]
    if not onsets:
        raise V2MError(f"{name}: the music is empty (no notes)", "evaluate a piece that has notes")
    onsets = mr.merge_onsets(np.concatenate(onsets).astype(np.float64))
    beats = mr.as_times(seconds.get_beats())
    duration = float(seconds.end())
    beats = beats[beats < duration]
    return Music(kind=kind, onsets=onsets, beats=beats, bpm=mr.beats_tempo(beats), duration=duration, score=score,
                 requested_controls=requested_controls)


def read_audio(path: Path) -> np.ndarray:
    """Mono float32 samples at SAMPLE_RATE. soundfile reads WAV/FLAC/OGG directly; other codecs (mp3, m4a, the
    audio track of a video) are decoded and resampled by ffmpeg — not librosa.load, whose import compiles numba
    code (seconds per process, and a crash when two processes fill a fresh numba cache at once)."""
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        samples = samples.mean(axis=1)
    except Exception:  # not a format libsndfile knows
        info = stream.probe(path)
        if not info.has_audio:
            raise V2MError(f"{path}: has no audio stream to evaluate")
        return stream.read_audio(info, SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        from math import gcd

        g = gcd(int(rate), SAMPLE_RATE)
        if SAMPLE_RATE // g == 1:  # 44.1 kHz renders: the same filter without importing scipy.signal
            return decimate(samples, int(rate) // g).astype(np.float32)
        from scipy.signal import resample_poly

        samples = resample_poly(samples, SAMPLE_RATE // g, int(rate) // g).astype(np.float32)
    return samples


def music_from_audio(samples: np.ndarray, sample_rate: int, name: str = "audio") -> Music:
    """Mono audio → Music: onsets and beats (stages/rhythm/audio.py, librosa's algorithms), computed block by block
    (stages/evaluate/audio_stream.py) as for a file."""
    return _music_heard(hear(split(np.asarray(samples, dtype=np.float32)), sample_rate, name))


def music_from_audio_file(path: Path, name: str | None = None) -> Music:
    """An audio file → Music, read in blocks where soundfile can (memory flat in its length), else whole."""
    return _music_heard(hear_file(Path(path), SAMPLE_RATE, read_audio, name))


def _music_heard(heard: Heard) -> Music:
    return Music(kind="audio", onsets=heard.onsets, beats=heard.beats, bpm=heard.bpm, duration=heard.duration,
                 beats_source=BEATS_FROM_AUDIO)


def heard_beats(samples: np.ndarray, sample_rate: int) -> tuple[float, np.ndarray]:
    """(tempo BPM, beat times s) a listener hears: extract-rhythm's own analysis of audio (scenes and tempo changes
    included, every scene's pulse tracked: --sync pulse), so `v2m extract-rhythm music.wav` and evaluate hear the
    same beats in the same file. Audio too short to read a tempo in (< 2 s) has none."""
    try:
        rhythm = rhythm_from_audio(samples, sample_rate, RhythmConfig(sync="pulse"))
    except V2MError:
        return float("nan"), np.zeros(0)
    return float(rhythm["tempo"]["bpm"]), np.asarray(rhythm["beats"], dtype=np.float64)


def with_heard_beats(music: Music, heard: Music) -> Music:
    """Symbolic `music` with the beats tracked in its render `heard` (onsets, score and statistics kept).

    A tempo map made from the video's beat grid agrees with the video by construction; the beats a
    listener hears in the render are what `beat_f1` should then judge.
    """
    from dataclasses import replace

    return replace(music, beats=heard.beats, bpm=heard.bpm, beats_source=heard.beats_source)


def music_from_render(score, audio_path: str | Path, kind: str = "midi", requested_controls: dict | None = None) -> Music:
    """A score and its rendered audio file → Music: onsets and statistics from the score, beats heard in the audio."""
    heard = music_from_audio_file(Path(audio_path))
    return with_heard_beats(music_from_score(score, kind, requested_controls), heard)


# ---------------------------------------------------------------- control accuracy

def control_accuracy(requested_bars: list[dict], measured_bars: list[dict]) -> dict:
    """Requested vs measured per-bar classes, bar for bar: each requested bar (its `start`, seconds) with the
    measured bar that starts at the same time (within a quarter of the bar), so a lead-in or a missing bar in
    the music shifts nothing; bars without times are paired by index.

    density_accuracy: exact density class; density_within1: within ±1 class;
    strength_accuracy: per-beat onset-strength classes equal (over all beats compared).
    """
    pairs = _pair_bars(requested_bars, measured_bars)
    if not pairs:
        return {"bars_compared": 0.0}
    want = np.array([int(a["density"]) for a, _ in pairs])
    got = np.array([int(b["density"]) for _, b in pairs])
    same_strength = total_beats = 0
    for a, b in pairs:
        k = min(len(a.get("strength", [])), len(b.get("strength", [])))
        same_strength += sum(int(x) == int(y) for x, y in zip(a["strength"][:k], b["strength"][:k]))
        total_beats += k
    out = {"bars_compared": float(len(pairs)), "density_accuracy": float(np.mean(want == got)),
           "density_within1": float(np.mean(np.abs(want - got) <= 1))}
    if total_beats:
        out["strength_accuracy"] = same_strength / total_beats
    return out


def _pair_bars(requested: list[dict], measured: list[dict]) -> list[tuple[dict, dict]]:
    if not all("start" in b for b in requested) or not all("start_s" in b for b in measured):
        return list(zip(requested, measured))
    starts = np.array([float(b["start_s"]) for b in measured])
    pairs = []
    for i, bar in enumerate(requested):
        start = float(bar["start"])
        length = float(requested[i + 1]["start"]) - start if i + 1 < len(requested) else None
        if not len(starts):
            break
        k = int(np.argmin(np.abs(starts - start)))
        if abs(starts[k] - start) <= 0.25 * (length or (starts[k] - starts[k - 1] if k else 1.0)) + 1e-3:
            pairs.append((bar, measured[k]))
    return pairs


def measured_controls(score, tokenizer=None) -> list[dict]:
    """Per-bar controls measured from the music with the encoder's own code (stages/tokens/controls.py), so
    requested and measured classes share one scale; each bar with `start_s`, its start in seconds.
    `tokenizer`: a tokenizer JSON path/object (None = default)."""
    vocab = load_tokenizer(tokenizer)
    analysis = analyse_score(score, vocab)
    bars = bar_controls(analysis, vocab.stats) if analysis.base_ids else []
    starts = np.concatenate([[0.0], np.cumsum(analysis.bar_seconds)])  # bar 0 starts at tick 0, empty or not
    return [dict(bar, start_s=round(float(t), 3)) for bar, t in zip(bars, starts)]


# ---------------------------------------------------------------- one piece

def evaluate_pair(reference: Reference, music: Music, controls: dict | None = None, tokenizer=None) -> tuple[dict, dict]:
    """Rhythm metrics of `music` against the video `reference` (+ music statistics, + control accuracy).

    Music events after the video ends are dropped: `run` trims the soundtrack to the video.
    Returns (metrics, labels).
    """
    if reference.beats.size == 0:
        raise V2MError("the rhythm has no beats to score against", "extract it from a clip with visible motion")
    end = reference.duration + mr.F_WINDOW
    onsets, beats = music.onsets[music.onsets <= end], music.beats[music.beats <= end]
    if onsets.size == 0:
        raise V2MError("the music has no onsets within the video's duration", "check that the music belongs to this video")
    metrics, labels = mr.rhythm_metrics(reference.beats, onsets, reference.duration, video_bpm=reference.bpm,
                                        music_bpm=music.bpm if math.isfinite(music.bpm) else None,
                                        music_beats=beats if beats.size >= 2 else None)
    # which beats beat_f1 judged: a tempo map built on the video's grid agrees by construction, tracked audio is heard
    labels["music_beats"] = music.beats_source if "beat_f1" in metrics else "none (fewer than 2 beats)"
    if reference.cuts.size:
        # a cut is "hit" when a music onset falls within ±70 ms of it (same window as the beat F-measure)
        metrics["cut_hit"] = mr.beat_f_measure(reference.cuts, onsets).recall
        if beats.size:  # and it falls on the beat when one of the music's beats is within ±35 ms
            metrics["cut_on_beat"] = float(np.mean([np.min(np.abs(beats - c)) <= CUT_ON_BEAT for c in reference.cuts]))
    metrics.update(scene_metrics(reference, beats))
    if reference.planned > 0:
        labels["video_grid"] = (f"planned on the cuts for {100 * reference.planned:.0f} % of the video (no steady "
                                "pulse there): beat scores compare the music with a guessed grid")
    requested = (controls or music.requested_controls or {}).get("bars") or []
    if music.score is not None:
        statistics, music_labels = music_metrics(music, requested)
        metrics.update(statistics)
        labels.update(music_labels)
    if requested and music.score is not None:
        try:
            metrics.update(control_accuracy(requested, measured_controls(music.score, tokenizer)))
        except V2MError as e:
            # the rhythm scores stand on their own; say why control accuracy is missing instead of losing them
            labels["control_accuracy"] = f"not measured: {e.one_line()}"
    return metrics, labels


def scene_metrics(reference: Reference, beats: np.ndarray) -> dict:
    """Beat F-measure scene by scene (the music's beats vs the video's in each scene): its mean and worst, when
    the rhythm has more than one scene (a montage's tempi, a pulse then a planned grid)."""
    if len(reference.scenes) < 2 or beats.size < 2:
        return {}
    scores = []
    for scene in reference.scenes:
        lo, hi = float(scene["start"]), float(scene["end"])
        video = reference.beats[(reference.beats >= lo) & (reference.beats < hi)]
        if video.size:
            scores.append(mr.beat_f_measure(video, beats[(beats >= lo - mr.F_WINDOW) & (beats < hi)]).f1)
    return {"scene_beat_f1": float(np.mean(scores)), "scene_beat_f1_worst": float(np.min(scores)),
            "scenes": float(len(reference.scenes))} if scores else {}


def music_statistics(music: Music) -> dict:
    """The music statistics of symbolic music (stages/evaluate/music_metrics.py)."""
    if music.score is None:
        raise V2MError("music statistics need symbolic music (MIDI or tokens), not audio",
                       "pass the .mid (or the tokens), or add the video's rhythm to score the audio's rhythm")
    return stats(music.score)


def music_metrics(music: Music, control_bars: list[dict] | None = None) -> tuple[dict, dict]:
    """Music statistics + the melody's structure (stages/evaluate/structure.py) → (metrics, labels). Phrase starts
    come from `control_bars` (or the controls the music carries), else from the music."""
    metrics = music_statistics(music)
    bars = control_bars or (music.requested_controls or {}).get("bars") or None
    structure, labels = structure_metrics(music.score, bars)
    metrics.update(structure)
    return metrics, labels


# ---------------------------------------------------------------- summaries

def summarize(rows: list[dict]) -> dict:
    """mean / median / worst of every metric over rows' `metrics` (NaN and missing skipped; worst by direction)."""
    names = sorted({k for row in rows for k in row["metrics"]})
    summary: dict[str, dict] = {s: {} for s in STATISTICS}
    for name in names:
        values = np.array([row["metrics"][name] for row in rows
                           if row["metrics"].get(name) is not None and math.isfinite(row["metrics"][name])])
        if values.size == 0:
            continue
        summary["mean"][name] = float(values.mean())
        summary["median"][name] = float(np.median(values))
        direction = METRICS.get(name, 0)
        if direction:
            summary["worst"][name] = float(values.min() if direction > 0 else values.max())
    return summary


def clean(metrics: dict) -> dict:
    """Metrics ready for JSON: floats, NaN/inf as null (the artifact JSON forbids NaN)."""
    return {k: (float(v) if v is not None and math.isfinite(float(v)) else None) for k, v in sorted(metrics.items())}
