"""decode: rendering (beat placement, loudness), muxing (bit-identical video), and the tools' failure modes."""

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.music import song
from tests.stages.tokens.test_vocab import small_vocab
from v2m.errors import V2MError
from v2m.stages.tokens.convert import decode_ids, encode_score


def make_video(folder: Path, name: str = "clip.mp4", seconds: float = 2.0, audio: bool = True) -> Path:
    """A small H.264 test video (with a sine-tone audio track unless `audio` is False)."""
    path = folder / name
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=160x120:rate=25:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    subprocess.run(args + ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25", str(path)], check=True)
    return path


def video_packets_md5(path: Path) -> str:
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v", "-c", "copy", "-f", "md5", "-"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip()


def uneven_grid(beats: int, seed: int = 1) -> list[float]:
    """Beat times (s) with a tempo change at every beat: intervals drawn from 0.35..0.8 s (75..170 bpm)."""
    rng = np.random.default_rng(seed)
    return [round(float(t), 3) for t in 0.5 + np.cumsum(rng.uniform(0.35, 0.8, beats))]


def test_unknown_extension_is_refused():
    from v2m.stages.decode.render import target_of

    assert (target_of("a.MID"), target_of("b.flac"), target_of("c.mkv")) == ("midi", "audio", "video")
    with pytest.raises(V2MError, match="cannot decode to '.ogg'"):
        target_of("song.ogg")


def test_rendered_notes_land_on_an_uneven_beat_grid(tmp_path):
    """One note per beat (and a chord per bar) on a grid with a tempo change every beat: the onsets
    detected in the rendered audio are within 20 ms of the grid."""
    import librosa
    import soundfile

    from v2m.stages.decode.render import render_wav

    vocab = small_vocab()
    score, truth = song(notes_per_beat=(1, 1, 1, 1))
    grid = uneven_grid(truth.bars * truth.meter + 1)
    music = decode_ids(encode_score(score, vocab), vocab, beat_times=grid, downbeats=grid[::truth.meter])
    wav = render_wav(music, tmp_path / "grid.wav", sample_rate=22050)
    audio, rate = soundfile.read(str(wav), dtype="float32")
    assert rate == 22050 and audio.ndim == 2
    onsets = librosa.onset.onset_detect(y=audio.mean(axis=1), sr=rate, hop_length=64, units="time", backtrack=True)
    errors = [float(np.min(np.abs(onsets - beat))) for beat in grid[:-1]]
    assert max(errors) < 0.020, errors
    # loudness: RMS at the -20 dBFS target unless the -1 dBFS peak ceiling held it back
    rms, peak = 20 * np.log10(np.sqrt(np.mean(audio ** 2))), 20 * np.log10(np.max(np.abs(audio)))
    assert peak <= -0.9 and (abs(rms + 20) < 0.5 or abs(peak + 1) < 0.1)


def test_flac_and_program_change(tmp_path):
    import soundfile

    from v2m.stages.decode.render import render_wav

    score, _ = song(chords=("C",), notes_per_beat=(1,), chord_track=False)
    piano = soundfile.read(str(render_wav(score, tmp_path / "a.flac", sample_rate=16000)))[0]
    flute = soundfile.read(str(render_wav(score, tmp_path / "b.flac", sample_rate=16000, program=73)))[0]
    assert soundfile.info(str(tmp_path / "a.flac")).format == "FLAC"
    n = min(len(piano), len(flute))
    assert not np.allclose(piano[:n], flute[:n], atol=1e-3)


def test_missing_fluidsynth_and_soundfont_write_nothing(tmp_path, monkeypatch):
    from v2m.stages.decode.render import render_wav

    score, _ = song(chords=("C",), notes_per_beat=(1,))
    with pytest.raises(V2MError, match="soundfont .*no such file"):
        render_wav(score, tmp_path / "x.wav", soundfont=tmp_path / "missing.sf2")
    monkeypatch.setenv("PATH", str(tmp_path))  # no fluidsynth on PATH
    with pytest.raises(V2MError, match="fluidsynth not found on PATH.*apt-get install fluidsynth"):
        render_wav(score, tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []


def test_mux_copies_the_video_stream_and_fits_the_audio(tmp_path):
    from v2m import media
    from v2m.stages.decode.render import mux, render_wav

    video = make_video(tmp_path, seconds=2.0)
    long_music, _ = song(chords=("C", "F"), notes_per_beat=(2, 2), qpm=100)  # 4.8 s: trimmed to 2 s
    wav = render_wav(long_music, tmp_path / "music.wav", sample_rate=22050)
    for keep in (0.0, 0.2):
        out = mux(video, wav, tmp_path / f"out{keep}.mp4", keep_audio=keep)
        info = media.ffprobe(out)
        kinds = [s["codec_type"] for s in info["streams"]]
        assert sorted(kinds) == ["audio", "video"]
        assert video_packets_md5(out) == video_packets_md5(video)
        audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert abs(float(info["format"]["duration"]) - 2.0) < 0.05
        assert abs(float(audio["duration"]) - 2.0) < 0.05


def test_mux_onto_a_file_without_video_is_refused(tmp_path):
    from v2m.stages.decode.render import mux, render_wav

    wav = render_wav(song(chords=("C",), notes_per_beat=(1,))[0], tmp_path / "m.wav", sample_rate=16000)
    with pytest.raises(V2MError, match="has no video stream"):
        mux(wav, wav, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.wav"]


def test_short_music_is_padded_to_the_video(tmp_path):
    from v2m import media
    from v2m.stages.decode.render import mux, render_wav

    video = make_video(tmp_path, seconds=3.0, audio=False)
    wav = render_wav(song(chords=("C",), notes_per_beat=(1,), qpm=240)[0], tmp_path / "short.wav", sample_rate=22050)
    out = mux(video, wav, tmp_path / "out.mkv", keep_audio=0.5)  # no audio in the source: nothing to keep
    info = media.ffprobe(out)
    assert abs(float(info["format"]["duration"]) - 3.0) < 0.05
    assert hashlib.md5(video_packets_md5(out).encode()).hexdigest() == hashlib.md5(video_packets_md5(video).encode()).hexdigest()
