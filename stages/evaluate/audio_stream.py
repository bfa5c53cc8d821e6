"""The heard side of a render, read in blocks: onsets and beats of a WAV as long as the video, in memory that does
not grow with its length.

`v2m run` scores every render (stages/evaluate/report.py, `music_from_render`). Read whole, a 10-minute render
and its spectrograms held ~1 GB (a float copy of the samples at each step, float64 STFT frames of every hop and
their complex spectra, twice: evaluate's onset envelope and extract-rhythm's reading of the beats). Here the file is
read 64 k frames at a time (soundfile), mixed to mono, decimated to 22.05 kHz and fed to two streaming
spectrograms at once (stages/rhythm/audio.py `OnsetStrength`: hop 256 for onsets, hop 512 for beats and the
spectral centroid); what is kept per frame is a few floats.

The numbers are those of the whole-array path: the onset envelopes and centroid are bit-identical, the 44.1 →
22.05 kHz decimation differs by ≤ 2e-16 at a few samples at the edges (tests/stages/evaluate/test_audio_stream.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from v2m.errors import V2MError
from v2m.stages.evaluate import beat_metrics as mr
from v2m.stages.rhythm.audio import Decimator, OnsetStrength, centroid_of
from v2m.stages.rhythm.extract import AUDIO_FFT, AUDIO_HOP, RhythmConfig, rhythm_from_audio_features

BLOCK = 65536  # input frames read at a time (1.5 s at 44.1 kHz)
ONSET_HOP = 256  # evaluate's onset envelope (beat_metrics.onset_envelope: hop 256, window 1024)


@dataclass(frozen=True)
class Heard:
    """What a listener hears in audio: onsets (s), the tracked tempo (BPM, nan if none) and beats (s), and the
    length (s)."""

    onsets: np.ndarray
    bpm: float
    beats: np.ndarray
    duration: float


def wav_blocks(path: Path, sample_rate: int) -> Iterator[np.ndarray] | None:
    """Mono float32 blocks of an audio file at `sample_rate`, read by soundfile a block at a time; None when
    libsndfile cannot read it or its rate is not a whole multiple of `sample_rate` (the caller reads it whole)."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception:
        return None
    rate = int(info.samplerate)
    if rate % sample_rate:
        return None

    def blocks():
        decimator = Decimator(rate // sample_rate)
        for block in soundfile.blocks(str(path), blocksize=BLOCK, dtype="float32", always_2d=True):
            yield decimator.feed(block.mean(axis=1)).astype(np.float32)
        yield decimator.finish().astype(np.float32)
    return blocks()


def split(samples: np.ndarray) -> Iterator[np.ndarray]:
    """An array in memory as blocks (the same analysis for a file read whole)."""
    for start in range(0, len(samples), BLOCK):
        yield samples[start:start + BLOCK]


def hear(blocks: Iterable[np.ndarray], sample_rate: int, name: str = "audio", spill_dir=None) -> Heard:
    """Onsets and beats of mono audio arriving in blocks: evaluate's onset envelope (hop 256) and extract-rhythm's
    reading of audio (hop 512, scenes and tempo changes, every scene's pulse tracked: --sync pulse), as
    `report.music_from_audio` computes them on the whole array. Raises V2MError for non-finite or silent audio."""
    onsets = OnsetStrength(sample_rate, ONSET_HOP, 4 * ONSET_HOP, spill_dir)
    centroids: list[np.ndarray] = []
    beats = OnsetStrength(sample_rate, AUDIO_HOP, AUDIO_FFT, spill_dir,
                          on_frames=lambda mags: centroids.append(centroid_of(mags, sample_rate, AUDIO_FFT)))
    count, loudest = 0, 0.0
    for block in blocks:
        if not np.all(np.isfinite(block)):
            raise V2MError(f"{name}: the audio has NaN or infinite samples (a corrupt or float file written wrong)")
        if block.size:
            loudest = max(loudest, float(np.max(np.abs(block))))
        count += block.size
        onsets.feed(block)
        beats.feed(block)
    if count == 0 or loudest < 1e-4:
        raise V2MError(f"{name}: the music is empty (silent audio)", "evaluate audio that has sound")
    duration = count / sample_rate
    onset_times = mr.onsets_from_envelope(onsets.envelope(), sample_rate, ONSET_HOP)
    strength = beats.envelope()
    try:
        rhythm = rhythm_from_audio_features(strength, np.concatenate(centroids), duration, sample_rate / AUDIO_HOP,
                                            RhythmConfig(sync="pulse"))
        bpm, beat_times = float(rhythm["tempo"]["bpm"]), np.asarray(rhythm["beats"], dtype=np.float64)
    except V2MError:  # too short to read a tempo in (< 2 s)
        bpm, beat_times = float("nan"), np.zeros(0)
    return Heard(onset_times, bpm, beat_times, duration)


def hear_file(path: Path, sample_rate: int, read_whole, name: str | None = None) -> Heard:
    """`hear` a file: read in blocks where soundfile can (WAV, FLAC, OGG at a multiple of `sample_rate`), else
    whole by `read_whole(path)` (ffmpeg decodes other codecs; report.read_audio). Spills beside the file."""
    blocks = wav_blocks(path, sample_rate)
    if blocks is None:
        blocks = split(read_whole(path))
    spill = path.parent if path.parent.is_dir() and _writable(path.parent) else None
    return hear(blocks, sample_rate, name or str(path), spill)


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)

