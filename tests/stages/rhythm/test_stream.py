"""The low-resolution frame stream extract-rhythm reads (stages/rhythm/stream.py): the decoder shortcuts
are safe on every codec we meet (H.264, HEVC, VP9, MPEG-4 part 2), change the 128 px frames by
almost nothing, ffmpeg starts before the first chunk is asked for, and stopping early ends it."""

import subprocess

import numpy as np
import pytest

from tests import media
from v2m.errors import V2MError
from v2m.stages.rhythm import stream as video_stream


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("rhythm-stream")


@pytest.fixture(scope="module")
def clip(folder):
    return media.video(folder, "stream.mp4", duration=4.0, width=320, height=180, noise=4.0, seed=3)


def transcode(source, dest, *codec):
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-an", *codec, str(dest)], check=True)
    return dest


def plain_decode(path, size, rate):
    """The same frames through ffmpeg with no decoder shortcut (the loop filter on)."""
    w, h = size
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf",
                          f"fps={rate:.6f},scale={w}:{h}:flags=area", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)


@pytest.mark.parametrize("codec", [
    ("h264", "mp4", []),
    ("hevc", "mkv", ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=none"]),
    ("vp9", "webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M"]),
    ("mpeg4", "avi", ["-c:v", "mpeg4", "-q:v", "4"]),
])
def test_every_frame_arrives_and_matches_a_plain_decode(folder, clip, codec):
    name, suffix, args = codec
    path = clip[0] if name == "h264" else transcode(clip[0], folder / f"stream-{name}.{suffix}", *args)
    info = video_stream.probe(path)
    size = video_stream.analysis_size(info, 128)
    chunks = list(video_stream.stream_frames(info, size, 30.0, chunk=7))
    assert all(c.dtype == np.uint8 and c.shape[1:] == (72, 128, 3) for c in chunks)
    assert [len(c) for c in chunks[:-1]] == [7] * (len(chunks) - 1)
    frames = np.concatenate(chunks)
    reference = plain_decode(path, size, 30.0)
    assert len(frames) == len(reference) == 120
    # skipping the deblocking filter moves a 128 px frame by about one 8-bit level on average; the
    # error drifts along a group of pictures (filtered frames are references) and resets at keyframes
    difference = np.abs(frames.astype(np.int16) - reference).mean(axis=(1, 2, 3))
    assert difference.mean() < 1.0 and difference.max() < 2.0, f"{name}: mean abs difference up to {difference.max():.2f}"


def test_ffmpeg_starts_at_once_and_stopping_early_ends_it(clip):
    info = video_stream.probe(clip[0])
    stream = video_stream.stream_frames(info, (64, 36), 30.0, chunk=4)
    process = stream._proc
    assert process.poll() is None or process.returncode == 0  # running before the first chunk is read
    for _ in stream:
        break  # leaving the loop closes the stream
    assert process.poll() is not None and process.stdout.closed
    stream.close()  # twice is harmless


def test_the_pipe_holds_a_whole_chunk(clip):
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("no pipe sizes on this system")
    info = video_stream.probe(clip[0])
    with video_stream.stream_frames(info, (128, 72), 30.0) as stream:
        size = fcntl.fcntl(stream._proc.stdout.fileno(), fcntl.F_GETPIPE_SZ)
    limit = int(open("/proc/sys/fs/pipe-max-size").read())
    assert size == min(video_stream.PIPE_BYTES, limit) and size >= 128 * 72 * 3 * 32


def test_a_decoding_failure_is_one_clear_error(folder):
    garbage = folder / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    info = video_stream.MediaInfo(str(garbage), "video", 2.0, 30.0, 64, 36, False)  # as if probe had passed it
    with pytest.raises(V2MError) as error:
        for _ in video_stream.stream_frames(info, (64, 36), 30.0):
            pass
    assert "could not decode" in error.value.message and "\n" not in error.value.message


def test_decoder_threads_shrink_with_the_resolution():
    import os

    default = min(16, (os.cpu_count() or 1) + 1)
    counts = [video_stream.decode_threads(w, h) for w, h in [(320, 180), (1280, 720), (1920, 1080), (3840, 2160)]]
    assert counts == sorted(counts, reverse=True) and counts[0] == 16
    assert all(default <= c <= 16 for c in counts)
    assert counts[-1] == default  # 4K: ffmpeg's own choice, no extra frames in flight
