"""Self-describing artifacts: the contract between stages (docs/ARCHITECTURE.md, "Artifacts").

Every JSON artifact is ``{"format", "version", "created_by", "source", "data"}``:
``created_by`` records the v2m version, the stage, the fully resolved config and the seed;
``source`` the input's name and sha256; ``data`` is the stage's payload. Readers sniff
content (never the extension), check format and version, and say which command makes
the artifact they expected. Writes are atomic and refuse to overwrite without --force.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from . import __version__
from .errors import V2MError
from .limits import MAX_ARTIFACT_BYTES
from .schema import SCHEMA_FILES, check_artifact

# format → (current version, the command that makes it)
FORMATS: dict[str, tuple[int, str]] = {
    "v2m.rhythm": (1, "v2m extract-rhythm VIDEO"),
    "v2m.controls": (1, "v2m encode-tokens RHYTHM.json"),
    "v2m.tokens": (1, "v2m encode-tokens MUSIC.mid  or  v2m generate CONTROLS.json"),
    "v2m.report": (1, "v2m evaluate ..."),
    "v2m.corpus": (1, "v2m encode-tokens FOLDER -o CORPUS/  or  v2m encode-tokens --source music21 -o CORPUS/"),
    "v2m.model": (1, "v2m train CORPUS -o model.safetensors"),
}

STDIO = "-"


# ---------------------------------------------------------------- sniffing

def sniff(head: bytes) -> str:
    """Classify content by its first bytes.

    Returns one of: "empty", "midi", "json", "safetensors", "riff" (WAV), "other"
    (possibly media: ask ffprobe).
    """
    if not head:
        return "empty"
    if head[:4] == b"MThd":
        return "midi"
    stripped = head.lstrip()
    if stripped[:1] == b"{":
        return "json"
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len < 100_000_000:
            return "safetensors"
    if head[:4] == b"RIFF":
        return "riff"
    return "other"


def sniff_path(path: str | Path) -> str:
    """Sniff a file on disk (or "missing" / "directory")."""
    p = Path(path)
    if not p.exists():
        return "missing"
    if p.is_dir():
        return "directory"
    with open(p, "rb") as f:
        return sniff(f.read(64))


def json_format(obj: Any) -> str | None:
    return obj.get("format") if isinstance(obj, dict) else None


# ---------------------------------------------------------------- reading

def read_bytes(src: str | Path) -> bytes:
    """Read a whole input; "-" is stdin. Missing files and folders are one clear line."""
    if str(src) == STDIO:
        data = sys.stdin.buffer.read(MAX_ARTIFACT_BYTES + 1)
        if not data:
            raise V2MError("stdin is empty", "pipe an artifact in, e.g. `v2m extract-rhythm clip.mp4 | v2m encode-tokens -`")
        if len(data) > MAX_ARTIFACT_BYTES:
            raise V2MError(f"stdin: more than {MAX_ARTIFACT_BYTES >> 20} MB, larger than any artifact v2m reads")
        return data
    p = Path(src)
    if not p.exists():
        raise V2MError(f"{src}: no such file")
    if p.is_dir():
        raise V2MError(f"{src}: is a directory, expected a file")
    if not p.is_file():
        raise V2MError(f"{src}: not a regular file (a pipe or device)", "pass a file, or '-' to read stdin")
    if p.stat().st_size > MAX_ARTIFACT_BYTES:
        raise V2MError(f"{src}: {p.stat().st_size >> 20} MB, larger than any artifact v2m reads "
                       f"(the limit is {MAX_ARTIFACT_BYTES >> 20} MB)")
    return p.read_bytes()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def source_of(name: str | Path, data: bytes | None = None, path: str | Path | None = None) -> dict:
    """The `source` header: input name and sha256 of its bytes (from memory or streamed from disk)."""
    digest = sha256_bytes(data) if data is not None else sha256_file(path if path is not None else name)
    shown = "-" if str(name) == STDIO else Path(name).name
    return {"name": shown, "sha256": digest}


def describe(kind: str, obj: Any = None) -> str:
    """Human words for what was found, for wrong-kind errors."""
    if kind == "json":
        fmt = json_format(obj)
        return f"a {fmt} artifact" if fmt else "JSON that is not a v2m artifact"
    return {
        "empty": "an empty file", "midi": "a MIDI file", "safetensors": "a safetensors file",
        "riff": "a WAV/RIFF file", "other": "a file that is not a v2m artifact", "missing": "nothing (no such file)",
        "directory": "a directory",
    }.get(kind, kind)


def parse_artifact(data: bytes, name: str, expect: str | Iterable[str]) -> dict:
    """Parse and check an artifact: its format must be one of `expect` and its version known."""
    expected = (expect,) if isinstance(expect, str) else tuple(expect)
    kind = sniff(data[:64])
    obj = None
    if kind == "json":
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise V2MError(f"{name}: not valid JSON ({e.msg if hasattr(e, 'msg') else e}), the artifact is truncated or corrupt")
        except RecursionError:
            raise V2MError(f"{name}: JSON nested too deeply to be an artifact") from None
    fmt = json_format(obj)
    if fmt not in expected:
        wanted = " or ".join(expected)
        makers = "; ".join(f"{FORMATS[f][1]}" for f in expected if f in FORMATS)
        raise V2MError(f"{name}: expected a {wanted} artifact, found {describe(kind, obj)}", f"make one with: {makers}" if makers else None)
    version = obj.get("version")
    current = FORMATS[fmt][0]
    if version != current:
        raise V2MError(f"{name}: {fmt} version {version!r} is not supported (this v2m reads version {current})",
                       f"re-create it with: {FORMATS[fmt][1]}")
    if not isinstance(obj.get("data"), dict):
        raise V2MError(f"{name}: {fmt} artifact has no data section; it is truncated or corrupt")
    if fmt in SCHEMA_FILES:  # types, ranges, sizes and order of every field, before any work (v2m/schemas/)
        check_artifact(obj, fmt, name)
    return obj


def read_artifact(src: str | Path, expect: str | Iterable[str]) -> dict:
    """Read and check an artifact from a path or "-" (stdin)."""
    return parse_artifact(read_bytes(src), str(src), expect)


# ---------------------------------------------------------------- writing

def make_artifact(fmt: str, data: dict, *, stage: str, config: dict | None = None, seed: int | None = None,
                  source: dict | list | None = None) -> dict:
    """Wrap a payload in the standard header. No timestamps: same input + seed + config = same bytes."""
    return {
        "format": fmt,
        "version": FORMATS[fmt][0],
        "created_by": {"v2m": __version__, "stage": stage, "config": config or {}, "seed": seed},
        "source": source,
        "data": data,
    }


def dumps(obj: dict) -> bytes:
    """Deterministic, compact-but-readable JSON bytes."""
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode()


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same path once links are resolved, or (both existing) the same inode
    (a hard link)."""
    if str(a) == STDIO or str(b) == STDIO:
        return False
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_not_input(dest: str | Path | None, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output that is (or resolves to, through links) one of the inputs: --force never overwrites an
    input (`extract-rhythm x.mp4 -o x.mp4 --force` used to replace the video with JSON)."""
    if dest is None or str(dest) == STDIO:
        return
    for source in inputs:
        if source is not None and same_file(dest, source):
            shown = "" if str(source) == str(dest) else f" ({source})"
            raise V2MError(f"{dest}: is an input of this command{shown}; v2m never writes over its inputs, "
                           "not even with --force", "write the output to another path")


def check_output(dest: str | Path | None, force: bool, inputs: Iterable[str | Path | None] = ()) -> None:
    """Fail early (before any work) if `dest` is one of `inputs`, or exists and --force was not given."""
    if dest is None or str(dest) == STDIO:
        return
    check_not_input(dest, inputs)
    p = Path(dest)
    if p.is_dir() and not str(dest).endswith(os.sep):
        raise V2MError(f"{dest}: is a directory, expected a file path")
    if p.exists() and not force:
        raise V2MError(f"{dest}: already exists", "pass --force to overwrite it")
    place = p.parent if not str(dest).endswith(os.sep) else p
    while not place.exists() and place != place.parent:  # the folder is made on write: check where it would be
        place = place.parent
    if not place.is_dir():
        raise V2MError(f"{dest}: cannot write it ({place} is not a folder)")
    if not os.access(place, os.W_OK | os.X_OK):
        raise V2MError(f"{dest}: cannot write it ({place} is not writable)", "pick an output folder you can write to")


def _umask_mode() -> int:
    """The mode a plainly created file would get (mkstemp makes 0600 files; outputs should not be private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def unwritable(path: Path, error: OSError) -> V2MError:
    """One line for an output that cannot be written (read-only or missing place, no space, no permission)."""
    return V2MError(f"{path}: cannot write it ({error.strerror or type(error).__name__})",
                    "check the folder exists and is writable, and the disk has space")


def _temporary(path: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """mkstemp next to `path` (its folder made first), or the unwritable() line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except OSError as e:
        raise unwritable(path, e) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same folder + os.replace: never a half-written file."""
    p = Path(path)
    fd, tmp = _temporary(p, f".{p.name}.", ".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, p)
    except OSError as e:  # e.g. the disk filled up half-way: nothing is left behind
        Path(tmp).unlink(missing_ok=True)
        raise unwritable(p, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class atomic_path:
    """Context manager giving a temporary path next to `path`; renamed onto it only on success.

    For writers that need a filename (ffmpeg, fluidsynth, safetensors).
    """

    def __init__(self, path: str | Path, suffix: str | None = None):
        self.path = Path(path)
        self.suffix = suffix if suffix is not None else self.path.suffix

    def __enter__(self) -> Path:
        fd, tmp = _temporary(self.path, f".{self.path.stem}.", f".part{self.suffix}")
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.tmp.exists() and self.tmp.stat().st_size > 0:
            try:
                os.chmod(self.tmp, _umask_mode())
                os.replace(self.tmp, self.path)
            except OSError as e:
                self.tmp.unlink(missing_ok=True)
                raise unwritable(self.path, e) from None
        else:
            self.tmp.unlink(missing_ok=True)
            if exc_type is None:
                raise V2MError(f"{self.path}: the writer produced no output")


WORK_PREFIX = ".v2m-work-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def sweep_work_folders(folder: str | Path) -> int:
    """Remove the work folders that processes since killed (`kill -9`, a power cut) left in `folder`: their names
    carry the pid that made them, and a folder whose process is gone is nobody's. Returns how many were removed."""
    import shutil

    removed = 0
    try:
        entries = list(Path(folder).glob(WORK_PREFIX + "*"))
    except OSError:
        return 0
    for entry in entries:
        pid = entry.name[len(WORK_PREFIX):].split("-", 1)[0]
        if entry.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


class work_folder:
    """A temporary folder for intermediate files (a render's MIDI and raw WAV) beside the output it is for, named
    `.v2m-work-PID-*` so a later run in that folder removes it if this process is killed before its own clean-up;
    removed on exit, interrupted or not. `near` None: in the system's temporary folder (swept the same way)."""

    def __init__(self, near: str | Path | None = None):
        self.place = Path(near) if near is not None else Path(tempfile.gettempdir())

    def __enter__(self) -> Path:
        try:
            self.place.mkdir(parents=True, exist_ok=True)
            sweep_work_folders(self.place)
            self.path = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=self.place))
        except OSError as e:
            raise unwritable(self.place, e) from None
        return self.path

    def __exit__(self, *exc) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


def write_output(data: bytes, dest: str | Path | None, force: bool, binary: bool = False) -> None:
    """Write an artifact's bytes to `dest` ("-" or None = stdout), atomically and without clobbering."""
    if dest is None or str(dest) == STDIO:
        if binary and sys.stdout.isatty():
            raise V2MError("refusing to write binary data to a terminal", "pass -o FILE or redirect stdout")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    check_output(dest, force)
    atomic_write_bytes(dest, data)


def write_artifact(obj: dict, dest: str | Path | None, force: bool = False) -> None:
    write_output(dumps(obj), dest, force)
