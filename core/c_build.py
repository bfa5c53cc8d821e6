"""Compiling C kernels on first use: the system C compiler, a per-user cache keyed by content, ctypes to load.

This is how Inductor builds its CPU kernels, and what the CPU decode step (models/engines/native.py) and the
W8A8 kernel (quant/vnni.py) use. Their C sources are real files in a `csrc/` folder beside the Python that
loads them; headers shared between them (the matrix contract, csrc/v2m_matrix.h) live in core/csrc/, which is
on every build's include path. A library is compiled once per (sources, headers, flags, compiler) into
~/.cache/v2m (or $XDG_CACHE_HOME/v2m, `config.user_cache_dir`), written atomically (a temporary directory,
then a rename: two processes building at once both end with a whole file), and loaded with ctypes.
`needs` says why a kernel cannot run here (CPU features from /proc/cpuinfo, no compiler), so callers fall
back — and say so in the log at -v.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import user_cache_dir

INCLUDE = Path(__file__).resolve().parent / "csrc"  # headers every build sees (#include "v2m_matrix.h")


@dataclass(frozen=True)
class NativeMatrix:
    """A layer as a fused C step can call it: y [M, N] = x [M, K] · Wᵀ (+ bias) through `gemm`, the address of
    a v2m_gemm_fn (csrc/v2m_matrix.h) over the layer's own buffers `w`, `comp`, `scale`, `bias` (addresses;
    0 for none). `owner` keeps those buffers alive while the step points into them.

    A module offers itself to the step with a `native_matrix()` method returning one (or None), and keeps the one
    it returned in its `native` attribute until its buffers change (a new kernel, a move: then None); the step
    holds on to the object and compares it with `module.native` to tell when the layer changed."""

    n: int
    k: int
    w: int
    comp: int
    scale: int
    bias: int
    gemm: int
    owner: object = None


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def needs(features: set[str]) -> str | None:
    """Why C kernels using `features` (cpuinfo flag names) cannot run here, or None."""
    missing = features - cpu_flags()
    if missing:
        return f"needs a CPU with {', '.join(sorted(missing))}"
    if compiler() is None:
        return "needs a C compiler (cc/gcc/clang, or $CC) to build it on first use"
    return None


def _digest(sources: tuple[Path, ...], flags: tuple[str, ...], libs: tuple[str, ...], cc: str) -> str:
    digest = hashlib.sha256()
    for path in (*sources, *sorted(INCLUDE.glob("*.h"))):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update("\0".join([*flags, *libs, cc]).encode())
    return digest.hexdigest()[:16]


@functools.cache
def build(name: str, sources: tuple[Path, ...], flags: tuple[str, ...], libs: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Compile the C files `sources` into one shared library (once: cached on disk by content) and load it.

    RuntimeError with the compiler's message if the build fails.
    """
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc/clang, or $CC)")
    path = user_cache_dir() / f"{name}-{_digest(sources, (*flags, 'link-apart'), libs, cc)}.so"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            out = Path(tmp) / f"{name}.so"
            # compiled and linked apart: a library linked with -ffast-math gets crtfastmath.o (GCC ≤ 12), whose
            # constructor turns on flush-to-zero for the whole process that loads it (numpy, Hypothesis and the
            # user's code would lose subnormal floats); the objects keep the fast-math code, the link adds nothing
            objects = [Path(tmp) / f"{k}.o" for k in range(len(sources))]
            commands = [[cc, *flags, f"-I{INCLUDE}", "-c", str(source), "-o", str(obj)]
                        for source, obj in zip(sources, objects)]
            link_flags = [f for f in flags if f in ("-shared", "-fPIC") or f.startswith("-l")]
            commands.append([cc, *link_flags, *map(str, objects), "-o", str(out), *libs])
            for command in commands:
                run = subprocess.run(command, capture_output=True, text=True)
                if run.returncode != 0:
                    raise RuntimeError(f"building {name} failed: {run.stderr.strip()[:300]}")
            os.replace(out, path)
    return ctypes.CDLL(str(path))


def address(function) -> int:
    """The address of a ctypes library function (for a NativeMatrix's `gemm`)."""
    return ctypes.cast(function, ctypes.c_void_p).value or 0
