"""The I/O edge of extract-rhythm: probe an input, and stream-decode its frames at low resolution.

ffmpeg decodes and downscales (argument lists, never a shell) and writes raw RGB frames to a pipe;
we read fixed-size chunks, so memory is bounded by one chunk whatever the video's length. The
deblocking filter is skipped (``-skip_loop_filter all``): it only smooths 8x8 block edges that the
downscale to ~128 px wide averages away anyway, and it is a large share of H.264 decoding time.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from v2m import artifacts
from v2m.errors import V2MError
from v2m.media import ffprobe, file_arg, last_line, require

STILL_CODECS = {"png", "mjpeg", "bmp", "gif", "tiff", "webp", "jpegls", "jpeg2000", "ppm", "pgm", "pam"}


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about an input. Durations in seconds, fps in frames per second."""

    path: str
    kind: str  # "video" | "audio"
    duration: float
    fps: float | None
    width: int | None
    height: int | None
    has_audio: bool


def _fraction(text: str | None) -> float:
    try:
        num, _, den = (text or "0/1").partition("/")
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def probe(path: str | Path) -> MediaInfo:
    """Classify an input by content: a video, an audio file, or a clear error saying what it is instead."""
    name = str(path)
    found = artifacts.sniff_path(path)
    if found in ("missing", "directory"):
        raise V2MError(f"{name}: {'no such file' if found == 'missing' else 'is a directory'}",
                       "pass a video or audio file (a folder needs -o DIR/ for batch mode)" if found == "directory" else None)
    if found == "empty":
        raise V2MError(f"{name}: is empty (0 bytes), not a video")
    if found in ("json", "midi", "safetensors"):
        obj = None
        if found == "json":
            try:
                obj = artifacts.parse_artifact(Path(path).read_bytes(), name, artifacts.FORMATS.keys())
            except V2MError:
                obj = None
        raise V2MError(f"{name}: expected a video or audio file, found {artifacts.describe(found, obj)}",
                       "extract-rhythm reads media (mp4, mov, mkv, wav, mp3, ...)")
    try:
        info = ffprobe(path)
    except V2MError as e:
        detail = e.message.split("failed (", 1)[-1].rstrip(")")
        raise V2MError(f"{name}: not a readable video or audio file ({detail})",
                       "the file may be truncated or corrupt; check it with: ffprobe FILE")
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    duration = float(info.get("format", {}).get("duration") or 0.0)
    if video:
        v = video[0]
        fps = _fraction(v.get("avg_frame_rate")) or _fraction(v.get("r_frame_rate"))
        frames = int(v.get("nb_frames") or 0)
        if v.get("codec_name") in STILL_CODECS and (frames <= 1 and duration <= 0.1):
            raise V2MError(f"{name}: is a still image ({v.get('codec_name')}), there is no motion to read",
                           "pass a video; an image sequence can be made into one with ffmpeg -framerate 30 -i img%03d.png out.mp4")
        if duration <= 0:
            duration = float(v.get("duration") or 0.0)
        return MediaInfo(name, "video", duration, fps or None, int(v.get("width", 0)), int(v.get("height", 0)), bool(audio))
    if audio:
        return MediaInfo(name, "audio", duration, None, None, None, True)
    raise V2MError(f"{name}: has neither a video nor an audio stream")


def analysis_size(info: MediaInfo, width: int) -> tuple[int, int]:
    """The low-resolution (width, height) to decode at: `width` wide, source aspect ratio, even sizes."""
    w = min(width, info.width or width)
    w -= w % 2
    h = max(2, int(round(w * (info.height or 9) / (info.width or 16) / 2)) * 2)
    return w, h


PIPE_BYTES = 1 << 20  # the pipe from ffmpeg: Linux's default ceiling for unprivileged processes (64 KiB if not granted)


DECODE_MEMORY = 96 << 20  # bytes of source-resolution frames the extra decoder threads may hold


def decode_threads(width: int | None, height: int | None) -> int:
    """Decoder threads: as many as ~96 MiB of frames in flight allow, at most 16, never fewer than ffmpeg's default.

    ffmpeg's default (cores + 1) leaves a two-core machine idle a quarter of the time: frame-threaded
    H.264/HEVC stall on their reference frames, and more frames in flight fill the gaps (2 cores,
    720p, decode alone: 1.69 cores busy with 3 threads, 1.85 with 8, 1.90 with 16). A thread holds
    about three frames at the source resolution (720p: ~4 MiB), whatever the video's length, so
    the count shrinks with the resolution: 16 up to 720p, 10 at 1080p, the default at 4K.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    default = min(16, cores + 1)
    frame_bytes = (width or 1280) * (height or 720) * 3 // 2  # yuv420p
    return max(default, min(16, DECODE_MEMORY // (3 * frame_bytes)))


def decode_args(info: MediaInfo, size: tuple[int, int], rate: float, start: float = 0.0,
                duration: float | None = None) -> list[str]:
    """The ffmpeg command that writes the first video stream as raw RGB frames of `size` at `rate` frames/s."""
    w, h = size
    args = [require("ffmpeg"), "-v", "error", "-nostdin", "-threads", str(decode_threads(info.width, info.height)), "-skip_loop_filter", "all"]
    if start > 0:
        args += ["-ss", f"{start:.3f}"]
    args += ["-i", file_arg(info.path)]
    if duration is not None:
        args += ["-t", f"{duration:.3f}"]
    return args + ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", f"fps={rate:.6f},scale={w}:{h}:flags=area",
                   "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]


class FrameStream:
    """Chunks of frames from a running ffmpeg: iterate once for arrays (n <= chunk, height, width, 3) uint8.

    ffmpeg starts when the stream is made, not at the first chunk, so what the caller does before
    reading (imports, setting up the analysis) overlaps its start-up. The pipe is widened to hold
    a whole chunk and more: with the default 64 KiB (two 128 px frames) ffmpeg stalls each time we
    analyse a chunk, and decoding and analysis take turns instead of sharing the two cores.
    A failing ffmpeg becomes a V2MError with its last stderr line; closing early (or leaving the
    loop) kills it.
    """

    def __init__(self, info: MediaInfo, size: tuple[int, int], rate: float, start: float = 0.0,
                 duration: float | None = None, chunk: int = 32):
        self.path, self.size, self.chunk = info.path, size, chunk
        self._errors = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(decode_args(info, size, rate, start, duration), stdout=subprocess.PIPE,
                                      stderr=self._errors, stdin=subprocess.DEVNULL)
        _widen(self._proc.stdout.fileno(), PIPE_BYTES)

    def __iter__(self) -> Iterator[np.ndarray]:
        w, h = self.size
        frame_bytes = w * h * 3
        proc = self._proc
        try:
            while True:
                buffer = proc.stdout.read(frame_bytes * self.chunk)
                n = len(buffer) // frame_bytes
                if n:
                    yield np.frombuffer(buffer, np.uint8, n * frame_bytes).reshape(n, h, w, 3)
                if len(buffer) < frame_bytes * self.chunk:
                    break
            code = proc.wait()
            if code != 0:
                self._errors.seek(0)
                raise V2MError(f"{self.path}: ffmpeg could not decode the video ({last_line(self._errors.read())})")
        finally:
            self.close()

    def close(self) -> None:
        """Stop ffmpeg if it still runs and release the pipe; safe to call twice."""
        proc = self._proc
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        self._errors.close()

    def __enter__(self) -> "FrameStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_proc"):
            self.close()


def _widen(fd: int, size: int) -> None:
    """Ask for a pipe buffer of `size` bytes; where that is not possible (not Linux, a lower limit) keep the default."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError):
        pass


def stream_frames(info: MediaInfo, size: tuple[int, int], rate: float, start: float = 0.0,
                  duration: float | None = None, chunk: int = 32) -> FrameStream:
    """Start decoding: chunks of frames (n <= chunk, height, width, 3) uint8 at `rate` frames/s (see FrameStream)."""
    return FrameStream(info, size, rate, start, duration, chunk)


def read_audio(info: MediaInfo, sample_rate: int, start: float = 0.0, duration: float | None = None) -> np.ndarray:
    """The first audio stream as mono float32 samples at `sample_rate` (decoded by ffmpeg)."""
    args = [require("ffmpeg"), "-v", "error", "-nostdin"]
    if start > 0:
        args += ["-ss", f"{start:.3f}"]
    args += ["-i", file_arg(info.path)]
    if duration is not None:
        args += ["-t", f"{duration:.3f}"]
    args += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    proc = subprocess.run(args, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise V2MError(f"{info.path}: ffmpeg could not decode the audio ({last_line(proc.stderr)})")
    return np.frombuffer(proc.stdout, np.float32)
