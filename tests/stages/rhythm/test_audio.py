"""stages/rhythm/audio.py computes what librosa computes (onset strength, onset picking, Ellis's beat tracker,
spectral centroid) without importing it: checked here against librosa itself on synthetic audio with known
beats — clicks and sweeps at several tempi, with swing, jitter and noise, at two hop/window settings."""

import numpy as np
import pytest

from v2m.stages.rhythm import audio as ar

SR = 22050


def clicks(bpm: float, seconds: float = 16.0, jitter: float = 0.0, offbeats: bool = False, seed: int = 0):
    """Decaying 880 Hz pings on the beat (and on some off-beats), in faint noise: beat times known."""
    rng = np.random.default_rng(seed)
    y = 0.01 * rng.standard_normal(int(seconds * SR)).astype(np.float32)
    ping = (np.sin(2 * np.pi * 880 * np.arange(2000) / SR) * np.exp(-np.arange(2000) / 300)).astype(np.float32)
    period = 60.0 / bpm
    beats = np.arange(0.3, seconds - 0.2, period)
    times = np.sort(np.concatenate([beats, beats[::3] + period / 2])) if offbeats else beats
    for t in times + rng.normal(0, jitter, times.size):
        i = int(t * SR)
        y[i:i + ping.size] += ping[:len(y[i:i + ping.size])]
    return y, beats


CASES = [(70, 0.0, False), (96, 0.01, True), (120, 0.0, True), (143, 0.01, False), (175, 0.0, True)]


@pytest.fixture(scope="module")
def librosa():
    import librosa.beat
    import librosa.feature
    import librosa.onset

    return librosa


def test_each_test_worker_compiles_librosa_into_its_own_numba_cache():
    """tests/conftest.py: workers sharing one numba cache crash on each other's half-written files (CI saw
    segfaults in librosa's peak_pick); a run without pytest-xdist has nothing to share it with."""
    import os

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        pytest.skip("not a pytest-xdist worker")
    assert worker in os.path.basename(os.environ["NUMBA_CACHE_DIR"])


@pytest.mark.parametrize("bpm,jitter,offbeats", CASES)
@pytest.mark.parametrize("hop,n_fft", [(256, 1024), (512, 2048)])
def test_the_same_envelope_onsets_and_beats_as_librosa(librosa, bpm, jitter, offbeats, hop, n_fft):
    y, _ = clicks(bpm, jitter=jitter, offbeats=offbeats, seed=bpm)
    expected = librosa.onset.onset_strength(y=y, sr=SR, hop_length=hop, n_fft=n_fft)
    envelope = ar.onset_strength(y, SR, hop, n_fft)
    assert envelope.dtype == np.float32 and envelope.shape == expected.shape
    np.testing.assert_allclose(envelope, expected, rtol=1e-5, atol=1e-6 * float(expected.max()))
    np.testing.assert_array_equal(ar.pick_onsets(expected, SR, hop),
                                  librosa.onset.onset_detect(onset_envelope=expected, sr=SR, hop_length=hop))
    tempo, beats = librosa.beat.beat_track(onset_envelope=expected, sr=SR, hop_length=hop)
    own_tempo, own_beats = ar.track_beats(expected, SR, hop)
    assert own_tempo == pytest.approx(float(np.atleast_1d(tempo)[0]), rel=1e-9)
    np.testing.assert_array_equal(own_beats, beats)


def test_beats_land_on_the_clicks_and_silence_has_none():
    y, times = clicks(120, jitter=0.005, offbeats=True)
    tempo, frames = ar.track_beats(ar.onset_strength(y, SR, 256, 1024), SR, 256)
    assert tempo == pytest.approx(120, rel=0.04)
    beats = frames * 256 / SR
    nearest = np.abs(beats[:, None] - times[None, :]).min(axis=1)
    assert len(beats) >= 0.9 * len(times) and np.median(nearest) < 0.03
    silent = np.zeros(SR * 4, dtype=np.float32)
    assert ar.track_beats(ar.onset_strength(silent, SR, 256, 1024), SR, 256)[1].size == 0
    assert ar.pick_onsets(ar.onset_strength(silent, SR, 256, 1024), SR, 256).size == 0


def test_spectral_centroid_matches_librosa(librosa):
    y, _ = clicks(100)
    expected = librosa.feature.spectral_centroid(y=y, sr=SR, hop_length=512)[0]
    np.testing.assert_allclose(ar.spectral_centroid(y, SR, 512), expected, rtol=1e-4, atol=1e-2)


def test_mel_filters_match_librosa(librosa):
    for sr, n_fft in ((22050, 1024), (44100, 2048), (16000, 512)):
        np.testing.assert_allclose(ar.mel_filters(sr, n_fft), librosa.filters.mel(sr=sr, n_fft=n_fft), rtol=1e-6, atol=1e-9)


def test_scoring_a_render_imports_none_of_the_slow_libraries(tmp_path):
    """The point of the module: scoring a 44.1 kHz render against a video starts in well under a second
    (librosa's beat and onset modules cost ~3.6 s of numba start-up per process, scipy.signal ~0.7 s,
    mir_eval — scipy.stats — ~0.5 s)."""
    import subprocess
    import sys

    import soundfile

    y = np.zeros(44100 * 3, dtype=np.float32)
    y[::22050] = 1
    soundfile.write(tmp_path / "clicks.wav", y, 44100)
    code = ("import sys, numpy as np\nfrom pathlib import Path\nfrom v2m.stages.evaluate import report as evaluate, beat_metrics as mr\n"
            f"samples = evaluate.read_audio(Path({str(tmp_path / 'clicks.wav')!r}))\n"
            "music = evaluate.music_from_audio(samples, evaluate.SAMPLE_RATE)\n"
            "mr.rhythm_metrics(np.arange(0.5, 3, 0.5), music.onsets, 3.0, music_beats=music.beats)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'librosa', 'numba', 'mir_eval'}),"
            " 'scipy.signal' in sys.modules, 'scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False False"


@pytest.mark.parametrize("length", [7, 1001, 44100 * 2 + 1])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_decimate_is_scipys_resample_poly(length, factor):
    from scipy.signal import resample_poly

    x = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    expected = resample_poly(x, 1, factor)  # scipy computes float32 input in float32; ours in float64
    got = ar.decimate(x, factor)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-6)


@pytest.mark.parametrize("length", [1024, 3000, 9000])
def test_clips_shorter_than_the_beat_window_match_librosa_too(librosa, length):
    """An envelope shorter than the tracker's Gaussian window (a fraction of a second of audio)."""
    y = np.zeros(length, dtype=np.float32)
    y[length // 2] = 0.5
    envelope = ar.onset_strength(y, SR, 256, 1024)
    tempo, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=SR, hop_length=256)
    own_tempo, own_beats = ar.track_beats(envelope, SR, 256)
    assert own_tempo == pytest.approx(float(np.atleast_1d(tempo)[0]))
    np.testing.assert_array_equal(own_beats, beats)


def test_audio_with_nan_samples_is_one_clear_error():
    from v2m.errors import V2MError
    from v2m.stages.evaluate import report as evaluate

    y = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    y[100] = np.nan
    with pytest.raises(V2MError, match="NaN or infinite"):
        evaluate.music_from_audio(y, SR)
