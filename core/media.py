"""External media tools: ffmpeg/ffprobe and FluidSynth, always run with argument lists (never a shell)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .errors import V2MError

# what v2m reads as media, by file name (inputs are still checked by content: ffprobe decides)
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"}

# tool → Debian package that provides it
PACKAGES = {"ffmpeg": "ffmpeg", "ffprobe": "ffmpeg", "fluidsynth": "fluidsynth"}

SOUNDFONT_LOCATIONS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
)


def require(tool: str) -> str:
    """The path of `tool`, or a V2MError naming the Debian package to install."""
    path = shutil.which(tool)
    if path is None:
        package = PACKAGES.get(tool, tool)
        raise V2MError(f"{tool} not found on PATH", f"install the Debian package '{package}': sudo apt-get install {package}")
    return path


def run_tool(args: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a tool; a failure becomes one line with the tool's last stderr line."""
    require(args[0])
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise V2MError(f"{what}: {args[0]} timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        last = last_line(proc.stderr)
        raise V2MError(f"{what}: {args[0]} failed ({last})")
    return proc


def last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def file_arg(path: str | Path) -> str:
    """A path as ffmpeg and ffprobe must be given it: the `file:` protocol with the absolute path, so a file name is
    never read as an option (`-clip.mp4`), another protocol (`a:b.mp4`, `concat:/elsewhere/x.mp4`, `http:...`)
    or a URL — ffmpeg reads exactly the file named, nothing outside it."""
    return "file:" + os.path.abspath(os.fspath(path))


def _probe_args(path: str | Path) -> list[str]:
    return ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", file_arg(path)]


# a cache: ffprobe runs started by prefetch_probe, taken by the next ffprobe() of the same path in this process
_PREFETCHED: dict[str, subprocess.Popen] = {}


def prefetch_probe(path: str | Path) -> None:
    """Start ffprobe on `path` in the background; the next `ffprobe(path)` in this process takes its answer.

    Why: a CLI stage spends ~0.1 s importing numpy/OpenCV and ~0.1 s in ffprobe before ffmpeg can start
    decoding; started first, the probe runs while the libraries load (extract-rhythm's speed target is
    measured against a bare ffmpeg decode, start-up included). Never raises: any problem is found and
    reported by the `ffprobe` call that follows.
    """
    if str(path) in _PREFETCHED or shutil.which("ffprobe") is None:
        return
    try:
        _PREFETCHED[str(path)] = subprocess.Popen(_probe_args(path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                  stderr=subprocess.DEVNULL)
    except OSError:
        pass


def ffprobe(path: str | Path) -> dict:
    """ffprobe's JSON description of a file's format and streams."""
    pending = _PREFETCHED.pop(str(path), None)
    if pending is not None:
        try:
            out, _ = pending.communicate(timeout=60)
            if pending.returncode == 0:
                return json.loads(out or b"{}")
        except (subprocess.TimeoutExpired, ValueError):
            pending.kill()
        # failed or odd: run it again in the foreground, which words the error
    proc = run_tool(_probe_args(path), what=str(path), timeout=60)
    return json.loads(proc.stdout or b"{}")


def media_files(folder: Path, suffixes: set[str]) -> list[Path]:
    """Files in `folder` (recursively) whose suffix is in `suffixes`, sorted for determinism."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def find_soundfont(explicit: str | Path | None = None) -> Path:
    """An explicit soundfont path, or the first General MIDI soundfont in the standard locations."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise V2MError(f"soundfont {explicit}: no such file")
        with open(p, "rb") as f:
            head = f.read(12)
        # SoundFont 2/3 files are RIFF chunks of form `sfbk`; FluidSynth silently falls back to another font otherwise
        if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
            raise V2MError(f"soundfont {explicit}: not a SoundFont (no RIFF sfbk header)",
                           "pass a General MIDI .sf2 or .sf3 file, e.g. /usr/share/sounds/sf2/FluidR3_GM.sf2")
        return p
    for candidate in SOUNDFONT_LOCATIONS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise V2MError("no General MIDI soundfont found", "install the Debian package 'fluid-soundfont-gm' or pass --soundfont FILE.sf2")
