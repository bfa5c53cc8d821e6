"""Test media made on the spot, with ground truth: synthetic videos and audio (v2m.samples), and the
broken or wrong inputs a user can pass by mistake (empty, truncated, still image, MIDI, an artifact).

Everyone's tests may use these; each helper writes into the folder it is given and returns the path
(videos also return their ground truth: beats, downbeats, cuts, bpm).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from v2m import artifacts
from v2m.samples import SampleSpec, write_onset_audio, write_video

# CI and the README's setup install FluidSynth; the GPU machine has none (its tests of rendering skip there)
needs_fluidsynth = pytest.mark.skipif(shutil.which("fluidsynth") is None,
                                      reason="renders with FluidSynth (Debian package 'fluidsynth'), not installed here")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="makes media with ffmpeg (Debian package 'ffmpeg'), not installed here")


def video(folder: Path, name: str = "clip.mp4", **spec) -> tuple[Path, dict]:
    """A small synthetic video (default 320x180, 8 s, 120 BPM, mixed motion, one cut) and its truth.

    Made once per folder and name: a second call with the same name returns the same file.
    """
    path = Path(folder) / name
    truth_path = path.with_name(path.name + ".truth.json")
    if path.exists() and truth_path.exists():
        return path, json.loads(truth_path.read_text())
    settings = {"bpm": 120.0, "duration": 8.0, "width": 320, "height": 180, "cuts": 1, "seed": 0, **spec}
    truth = write_video(path, SampleSpec(**settings))
    truth_path.write_text(json.dumps(truth))
    return path, truth


def onset_audio(folder: Path, name: str = "clicks.wav", bpm: float = 100.0, duration: float = 8.0) -> tuple[Path, dict]:
    """Audio only (no video stream) with a percussive onset on every beat; suffix picks the container."""
    path = Path(folder) / name
    return path, write_onset_audio(path, bpm=bpm, duration=duration)


def still_image(folder: Path, name: str = "still.png") -> Path:
    path = Path(folder) / name
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90", "-frames:v", "1", str(path)],
                   check=True)
    return path


def truncated(source: Path, folder: Path, name: str = "truncated.mp4", keep: float = 0.4, index_first: bool = True) -> Path:
    """The first `keep` fraction of an mp4's bytes: a download cut off half-way.

    With `index_first` (the moov index up front, as v2m.samples writes it) the start still plays;
    without it (index at the end, ffmpeg's default) nothing can be read.
    """
    source = Path(source)
    if not index_first:  # remux with the index at the end
        moved = Path(folder) / f".{name}.remux.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c", "copy", str(moved)], check=True)
        source = moved
    data = source.read_bytes()
    path = Path(folder) / name
    path.write_bytes(data[:int(len(data) * keep)])
    if not index_first:
        source.unlink()
    return path


def corrupt(folder: Path, name: str = "corrupt.mp4") -> Path:
    """Bytes that look like nothing ffmpeg knows, under a video name."""
    path = Path(folder) / name
    path.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    return path


def empty(folder: Path, name: str = "empty.mp4") -> Path:
    path = Path(folder) / name
    path.write_bytes(b"")
    return path


def midi(folder: Path, name: str = "song.mid") -> Path:
    """A minimal valid MIDI file (one note), written byte by byte."""
    track = bytes([0x00, 0x90, 60, 100, 0x60, 0x80, 60, 0, 0x00, 0xFF, 0x2F, 0x00])
    data = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + (96).to_bytes(2, "big")
    data += b"MTrk" + len(track).to_bytes(4, "big") + track
    path = Path(folder) / name
    path.write_bytes(data)
    return path


def tokens_artifact(folder: Path, name: str = "tokens.json") -> Path:
    """A (tiny) v2m.tokens artifact: the wrong kind of input for extract-rhythm."""
    path = Path(folder) / name
    artifacts.write_artifact(artifacts.make_artifact("v2m.tokens", {"tokenizer_hash": "0", "ids": [1, 2], "meter": 4},
                                                     stage="test"), path)
    return path
