"""evaluate reads a render in blocks (stages/evaluate/audio_stream.py): the same numbers as the whole-array path,
memory that does not grow with the length."""

from __future__ import annotations

import numpy as np
import soundfile

from v2m.stages.evaluate import report as ev
from v2m.stages.evaluate.audio_stream import BLOCK, hear_file
from v2m.stages.rhythm import audio
from v2m.stages.rhythm.extract import RhythmConfig, rhythm_from_audio


def _music(seconds: float, rate: int = 44100, seed: int = 0) -> np.ndarray:
    """Stereo clicks on a 100 BPM grid over noise, with a few off-beat hits: onsets and a pulse to find."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    x = 0.01 * rng.standard_normal((n, 2))
    for t in list(np.arange(0.3, seconds, 0.6)) + list(rng.uniform(0, seconds, 8)):
        i = int(t * rate)
        hit = np.exp(-np.arange(2000) / 300.0) * np.sin(np.arange(2000) * 0.3)
        x[i:i + 2000] += 0.5 * hit[: len(x[i:i + 2000]), None]
    return x.astype(np.float32)


def test_block_by_block_equals_the_whole_array(tmp_path):
    wav = tmp_path / "music.wav"
    soundfile.write(wav, _music(20.0), 44100, subtype="PCM_16")
    whole = ev.read_audio(wav)  # mono, decimated to 22.05 kHz in one go
    # the pieces: decimation (≤ 2e-16 apart at the edges), onset strength and centroid (bit for bit)
    decimator = audio.Decimator(2)
    stereo = soundfile.read(wav, dtype="float32", always_2d=True)[0]
    parts = [decimator.feed(stereo[i:i + 9999].mean(axis=1)) for i in range(0, len(stereo), 9999)]
    streamed = np.concatenate([*parts, decimator.finish()])
    reference = audio.decimate(stereo.mean(axis=1), 2)
    assert streamed.shape == whole.shape and np.max(np.abs(streamed - reference)) <= 1e-15
    for hop, n_fft in ((256, 1024), (512, 2048)):
        strength = audio.OnsetStrength(22050, hop, n_fft)
        strength.BLOCK_FRAMES = 50  # several spill blocks, a flux across each seam
        for i in range(0, len(whole), 7777):
            strength.feed(whole[i:i + 7777])
        # bit-identical with current numpy/BLAS; the lowest supported numpy (1.23) rounds the blocked mel products'
        # float32 sums differently in the last bit (seen: 0.9538589 vs 0.95385885), so float32 round-off (1e-5 relative) is allowed
        np.testing.assert_allclose(strength.envelope(), audio.onset_strength(whole, 22050, hop, n_fft),
                                   rtol=1e-5, atol=1e-6)
    # and what evaluate reports: onsets, tempo and beats (extract-rhythm's reading of the audio, --sync pulse)
    heard = hear_file(wav, 22050, ev.read_audio)
    rhythm = rhythm_from_audio(whole, 22050, RhythmConfig(sync="pulse"))
    assert heard.bpm == rhythm["tempo"]["bpm"] and np.array_equal(heard.beats, rhythm["beats"])
    assert np.array_equal(heard.onsets, ev.mr.audio_onsets(whole, 22050))
    assert heard.duration == len(whole) / 22050 and len(whole) > 2 * BLOCK // 2  # more than one block


def test_memory_does_not_grow_with_the_length(tmp_path):
    """Peak traced allocations of the analysis of 30 s and of 150 s of music: the extra 120 s may cost < 80 KB per
    second (measured ~40 KB/s: the analysis of the 43 Hz envelope — running medians, the tempo's dynamic programme);
    read whole, every step held a copy of the samples or their spectra: ~1.5 MB per second."""
    import tracemalloc

    peaks = []
    for seconds in (30.0, 150.0):
        wav = tmp_path / f"m{seconds:.0f}.wav"
        soundfile.write(wav, _music(seconds), 44100, subtype="PCM_16")
        tracemalloc.start()
        ev.music_from_audio_file(wav)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert (peaks[1] - peaks[0]) / 120.0 < 80e3, peaks
