"""ffprobe started ahead (media.prefetch_probe) gives the same answer as a foreground probe, and the same one-line
error for a broken file."""

import shutil
import subprocess

import pytest

from v2m import media
from v2m.errors import V2MError

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian package 'ffmpeg')")


def test_prefetched_probe_equals_a_foreground_probe(tmp_path):
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    want = media.ffprobe(clip)
    media.prefetch_probe(clip)
    assert str(clip) in media._PREFETCHED
    assert media.ffprobe(clip) == want
    assert str(clip) not in media._PREFETCHED  # taken once: a later probe runs afresh


def test_prefetched_probe_of_a_broken_file_raises_the_usual_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 10)
    with pytest.raises(V2MError) as foreground:
        media.ffprobe(broken)
    media.prefetch_probe(broken)
    with pytest.raises(V2MError) as prefetched:
        media.ffprobe(broken)
    assert str(prefetched.value) == str(foreground.value)
