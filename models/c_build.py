"""Compiling C kernels on first use: the system C compiler, a per-user cache keyed by content, ctypes to load.

This is how Inductor builds its CPU kernels, and what the CPU decode step (models/native.py) and the W8A8 kernel
(quant/vnni.py) use: the C source lives in the Python module that owns it, is compiled once per (source, flags,
compiler) into ~/.cache/v2m (or $XDG_CACHE_HOME/v2m, `config.user_cache_dir`), written atomically (a temporary
directory, then a rename: two processes building at once both end with a whole file), and loaded with ctypes.
`needs` says why a kernel cannot run here (CPU features from /proc/cpuinfo, no compiler), so callers fall back.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


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


@functools.cache
def build(name: str, source: str, flags: tuple[str, ...], libs: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Compile `source` into a shared library (once: cached on disk by content) and load it.

    RuntimeError with the compiler's message if the build fails.
    """
    from v2m.config import user_cache_dir

    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc/clang, or $CC)")
    key = hashlib.sha256("\0".join([source, *flags, *libs, cc]).encode()).hexdigest()[:16]
    path = user_cache_dir() / f"{name}-{key}.so"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            src, out = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
            src.write_text(source)
            run = subprocess.run([cc, *flags, str(src), "-o", str(out), *libs], capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"building {name} failed: {run.stderr.strip()[:300]}")
            os.replace(out, path)
    return ctypes.CDLL(str(path))
