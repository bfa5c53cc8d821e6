"""Synthetic media with ground truth: videos whose motion follows a known tempo, and audio with known onsets.

Everything is drawn with numpy and encoded by piping raw frames to ffmpeg (libx264), one frame at a
time, so a 10-minute 720p video needs no more memory than a 10-second one. The ground truth (beat
times, downbeats, scene-cut times, tempo) is returned as a dict and, from the command line, written
next to the media as ``OUT.truth.json``.

Motion kinds (each beat is an *impact*: a change of direction or a sudden flash, as in dance or sport):

- ``bounce``: balls that hit the floor on every beat (higher arcs after downbeats);
- ``flash``: a patch that lights up on every beat and fades (brighter on downbeats);
- ``pan``: a camera-like pan over a textured scene that reverses direction on every beat;
- ``mixed``: all three at once, with smaller amplitudes.

A slow distractor square drifts across every scene (motion with no beat), Gaussian pixel noise is
added on request, and hard scene cuts (new palette, new texture, new layout) happen at random frame
boundaries, independent of the beat grid.

    v2m sample samples/clip.mp4 --if-missing          # ~20 s, 640x360, ~100 BPM, a few cuts
    v2m sample big.mp4 --bpm 150 --duration 300 --width 1280 --height 720 --motion pan --noise 12
    v2m sample clicks.wav --bpm 90 --duration 10       # audio with onsets on the beats
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .artifacts import atomic_path, atomic_write_bytes
from .errors import V2MError
from .media import AUDIO_SUFFIXES, file_arg, last_line, require

MOTIONS = ("bounce", "flash", "pan", "mixed")


@dataclass(frozen=True)
class SampleSpec:
    """What to draw. Times in seconds, sizes in pixels, noise as the std of 8-bit pixel noise."""

    bpm: float = 100.0
    duration: float = 20.0
    width: int = 640
    height: int = 360
    fps: float = 30.0
    seed: int = 0
    motion: str = "mixed"
    noise: float = 4.0
    cuts: int | None = None  # None: about one every 6 s
    meter: int = 4
    audio: bool = True  # a quiet tone as the soundtrack (so "video with audio" is the common case)
    crf: int = 20
    preset: str = "veryfast"
    gop: int | None = None  # keyframe interval in frames (None: x264's default); a short one flickers periodically


# ---------------------------------------------------------------- ground truth

def ground_truth(spec: SampleSpec) -> dict:
    """Beat times, downbeats and cut times implied by `spec` (seconds), without drawing anything."""
    rng = np.random.default_rng(spec.seed)
    period = 60.0 / spec.bpm
    phase = float(rng.uniform(0.15, 0.15 + period))
    beats = np.arange(phase, spec.duration - 1e-9, period)
    n_frames = int(round(spec.duration * spec.fps))
    n_cuts = spec.cuts if spec.cuts is not None else max(0, int(spec.duration // 6))
    cuts = _cut_frames(rng, n_frames, spec.fps, n_cuts)
    return {
        "bpm": spec.bpm,
        "beats": [round(float(b), 4) for b in beats],
        "downbeats": [round(float(b), 4) for b in beats[::spec.meter]],
        "meter": spec.meter,
        "cuts": [round(c / spec.fps, 4) for c in cuts],
        "cut_frames": cuts,
        "duration": n_frames / spec.fps,
        "frames": n_frames,
        "spec": asdict(spec),
    }


def _cut_frames(rng: np.random.Generator, n_frames: int, fps: float, n_cuts: int) -> list[int]:
    """Cut positions (index of the first frame of the new shot), >= 2 s apart and >= 1.5 s from the ends."""
    lo, hi, gap = int(1.5 * fps), n_frames - int(1.5 * fps), int(2.0 * fps)
    cuts: list[int] = []
    for _ in range(200 * max(n_cuts, 1)):
        if len(cuts) >= n_cuts or hi <= lo:
            break
        c = int(rng.integers(lo, hi))
        if all(abs(c - other) >= gap for other in cuts):
            cuts.append(c)
    return sorted(cuts)


# ---------------------------------------------------------------- drawing

def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]) * 255


def _luma(rgb: np.ndarray) -> float:
    return float(rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114)


def _with_luma(rgb: np.ndarray, target: float) -> np.ndarray:
    """The colour scaled (darker) or mixed with white (brighter) to have luma `target` (0..255)."""
    luma = _luma(rgb)
    if target <= luma:
        return rgb * (target / max(luma, 1e-6))
    return rgb + (255.0 - rgb) * (target - luma) / (255.0 - luma)


class _Shot:
    """One scene between cuts: a palette, a textured canvas wider than the frame (for pans), a layout."""

    def __init__(self, rng: np.random.Generator, spec: SampleSpec, hue: float, pan_margin: int):
        h, w = spec.height, spec.width
        self.hue = hue
        ys, xs = np.mgrid[0:h, 0:w + 2 * pan_margin].astype(np.float32)
        texture = np.zeros_like(xs)
        for _ in range(5):  # a few oblique gratings: texture the optical flow can lock onto
            k = rng.uniform(2, 9) * 2 * math.pi / h
            theta = rng.uniform(0, math.pi)
            texture += np.sin(k * (xs * math.cos(theta) + ys * math.sin(theta)) + rng.uniform(0, 2 * math.pi))
        texture /= np.abs(texture).max() + 1e-6
        base = _hsv_to_rgb(hue, rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.6))
        contrast = rng.uniform(25, 45)
        self.canvas = np.clip(base[None, None, :] + contrast * texture[..., None], 0, 255).astype(np.uint8)
        # the ball must differ from the scene in brightness, not only in hue: an isoluminant object is
        # invisible to grey-level motion analysis (real footage rarely hides motion that way)
        self.object_rgb = _with_luma(_hsv_to_rgb((hue + 0.5) % 1.0, 0.7, 1.0), 190.0 if _luma(base) < 100 else 35.0)
        self.flash_rgb = _hsv_to_rgb((hue + 0.3) % 1.0, 0.3, 1.0)
        self.ball_x = [rng.uniform(0.15, 0.45) * w, rng.uniform(0.55, 0.85) * w]
        self.flash_xy = (rng.uniform(0.1, 0.6) * w, rng.uniform(0.1, 0.4) * h)
        self.drift_y = rng.uniform(0.1, 0.8) * h
        self.drift_speed = rng.choice([-1, 1]) * rng.uniform(0.05, 0.12) * w  # px per second, no beat


def _beat_position(t: float, phase: float, period: float) -> tuple[int, float]:
    """(index of the last beat at or before t, fraction 0..1 of the way to the next beat)."""
    k = math.floor((t - phase) / period)
    return k, (t - phase) / period - k


def _disc(frame: np.ndarray, cx: float, cy: float, r: float, rgb: np.ndarray) -> None:
    h, w = frame.shape[:2]
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    frame[y0:y1, x0:x1][mask] = rgb.astype(np.uint8)


def render_frames(spec: SampleSpec, truth: dict):
    """Yield the frames (H, W, 3 uint8) one by one; memory stays constant whatever the duration."""
    rng = np.random.default_rng(spec.seed + 1)
    h, w = spec.height, spec.width
    period = 60.0 / spec.bpm
    phase = truth["beats"][0] if truth["beats"] else 0.0
    kinds = {"bounce", "flash", "pan"} if spec.motion == "mixed" else {spec.motion}
    scale = 0.6 if spec.motion == "mixed" else 1.0
    pan_amp = int(0.06 * w * scale * min(period / 0.5, 1.6)) if "pan" in kinds else 0  # px per beat
    noise_bank = None
    if spec.noise > 0:  # a few independent noise fields, picked at random per frame (fresh noise every frame is slow)
        noise_bank = np.clip(rng.normal(0, spec.noise, size=(6, h, w, 3)), -127, 127).astype(np.int8)
    cut_frames = set(truth["cut_frames"])
    hue = rng.uniform(0, 1)
    shot = _Shot(rng, spec, hue, pan_amp)
    radius = 0.08 * h
    for i in range(truth["frames"]):
        if i in cut_frames:  # a new scene: hue at least a third of the wheel away
            hue = (hue + rng.uniform(0.33, 0.67)) % 1.0
            shot = _Shot(rng, spec, hue, pan_amp)
        t = i / spec.fps
        k, frac = _beat_position(t, phase, period)
        accent = 1.0 if k % spec.meter == 0 else 0.6  # downbeats hit harder
        offset = pan_amp
        if "pan" in kinds:  # triangle wave: the camera reverses on every beat
            offset = int(round(pan_amp * (frac if k % 2 == 0 else 1.0 - frac) * 2)) if t >= phase else 0
        frame = shot.canvas[:, offset:offset + w].copy()
        dx = (shot.drift_speed * t) % (w + 0.1 * h) - 0.05 * h
        frame[int(shot.drift_y):int(shot.drift_y + 0.1 * h), max(0, int(dx)):max(0, int(dx + 0.1 * h))] = 200
        if "flash" in kinds and t >= phase:
            level = accent * math.exp(-frac * period / (0.12 + 0.15 * period))
            x0, y0 = shot.flash_xy
            patch = frame[int(y0):int(y0 + 0.3 * h), int(x0):int(x0 + 0.3 * h)].astype(np.float32)
            patch += scale * level * (shot.flash_rgb - patch)
            frame[int(y0):int(y0 + 0.3 * h), int(x0):int(x0 + 0.3 * h)] = patch.astype(np.uint8)
        if "bounce" in kinds:  # |sin| arcs: the ball hits the floor exactly on the beat
            floor = 0.9 * h - radius
            for j, bx in enumerate(shot.ball_x):
                height = scale * 0.5 * h * accent * (1.0 if j == 0 else 0.7) if t >= phase else 0.0
                y = floor - height * abs(math.sin(math.pi * ((t - phase) / period)))
                _disc(frame, bx, y, radius, shot.object_rgb)
        if noise_bank is not None:
            frame = np.clip(frame.astype(np.int16) + noise_bank[rng.integers(len(noise_bank))], 0, 255).astype(np.uint8)
        yield frame


# ---------------------------------------------------------------- encoding

def _ffmpeg_encode_args(spec: SampleSpec, out: Path, audio_args: list[str]) -> list[str]:
    return [require("ffmpeg"), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{spec.width}x{spec.height}", "-r", f"{spec.fps}", "-i", "-", *audio_args,
            "-c:v", "libx264", "-preset", spec.preset, "-crf", str(spec.crf), "-pix_fmt", "yuv420p",
            *(["-g", str(spec.gop)] if spec.gop else []), "-movflags", "+faststart", "-f", "mp4", file_arg(out)]


def write_video(path: str | Path, spec: SampleSpec = SampleSpec()) -> dict:
    """Draw and encode the video of `spec` to `path` (atomically); returns the ground truth."""
    if spec.motion not in MOTIONS:
        raise V2MError(f"unknown motion '{spec.motion}'", f"use one of: {', '.join(MOTIONS)}")
    if spec.width % 2 or spec.height % 2 or spec.width < 16 or spec.height < 16:
        raise V2MError(f"{spec.width}x{spec.height}: width and height must be even and at least 16")
    if not 20 <= spec.bpm <= 400 or spec.duration <= 0:
        raise V2MError("bpm must be in 20..400 and duration positive")
    truth = ground_truth(spec)
    audio_args: list[str] = []
    if spec.audio:  # a quiet 220 Hz tone: the clip has an audio stream, nothing in it is rhythmic
        audio_args = ["-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=44100:duration={truth['duration']}",
                      "-af", "volume=0.05", "-c:a", "aac", "-b:a", "64k"]
    encode_frames(path, render_frames(spec, truth), spec, audio_args, "the sample")
    return truth


def encode_frames(path: str | Path, frames, spec: SampleSpec, audio_args: list[str], what: str) -> None:
    """Pipe RGB frames (H, W, 3 uint8, one at a time) to ffmpeg's H.264 encoder, writing `path` atomically."""
    with atomic_path(path, suffix=".mp4") as tmp, tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(_ffmpeg_encode_args(spec, tmp, audio_args), stdin=subprocess.PIPE, stderr=errors)
        try:
            for frame in frames:
                proc.stdin.write(frame.tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        finally:
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            raise V2MError(f"{path}: ffmpeg could not encode {what} ({last_line(errors.read())})")


def write_onset_audio(path: str | Path, bpm: float = 100.0, duration: float = 10.0, seed: int = 0,
                      meter: int = 4, sample_rate: int = 22050) -> dict:
    """Audio with a percussive onset (noise burst + a decaying tone) on every beat; returns the ground truth.

    The container follows the suffix (wav, flac, m4a, mp3, ...), encoded by ffmpeg from raw float samples.
    """
    rng = np.random.default_rng(seed)
    period = 60.0 / bpm
    phase = float(rng.uniform(0.1, 0.1 + period))
    beats = np.arange(phase, duration - 0.05, period)
    n = int(duration * sample_rate)
    signal = 0.01 * rng.standard_normal(n).astype(np.float32)  # a quiet floor, like a room
    hit_len = int(0.15 * sample_rate)
    tt = np.arange(hit_len) / sample_rate
    for k, b in enumerate(beats):
        start = int(round(b * sample_rate))
        gain = 0.8 if k % meter == 0 else 0.45
        hit = gain * np.exp(-tt / 0.03) * (0.6 * rng.standard_normal(hit_len) + np.sin(2 * np.pi * 180 * tt))
        end = min(n, start + hit_len)
        signal[start:end] += hit[:end - start].astype(np.float32)
    signal = np.clip(signal, -1, 1)
    with atomic_path(path) as tmp:
        cmd = [require("ffmpeg"), "-v", "error", "-y", "-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "-", file_arg(tmp)]
        proc = subprocess.run(cmd, input=signal.tobytes(), capture_output=True)
        if proc.returncode != 0:
            raise V2MError(f"{path}: ffmpeg could not write the audio ({last_line(proc.stderr)})")
    return {"bpm": bpm, "beats": [round(float(b), 4) for b in beats], "downbeats": [round(float(b), 4) for b in beats[::meter]],
            "meter": meter, "cuts": [], "duration": n / sample_rate}


# ---------------------------------------------------------------- a sample file with its truth

def write_sample(out: str | Path, spec: SampleSpec = SampleSpec()) -> dict:
    """A video (or, for an audio suffix, audio with onsets) at `out` and its ground truth beside it as
    OUT.truth.json (beats, downbeats, cuts, bpm); returns the truth. `v2m sample` is this on the command line."""
    out = Path(out)
    if out.suffix.lower() in AUDIO_SUFFIXES:
        truth = write_onset_audio(out, spec.bpm, spec.duration, spec.seed, spec.meter)
    else:
        truth = write_video(out, spec)
    write_truth(out, truth)
    return truth


def write_truth(out: str | Path, truth: dict) -> None:
    """The ground truth of the clip `out`, beside it as OUT.truth.json."""
    out = Path(out)
    atomic_write_bytes(out.with_name(out.name + ".truth.json"), (json.dumps(truth, indent=1) + "\n").encode())
