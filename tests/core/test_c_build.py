"""core/c_build.py: C compiled on first use, cached by content — and loading it leaves the process's floating-point
state alone (a -ffast-math library linked in one step would switch on flush-to-zero for everyone)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from v2m import c_build


def subnormals_survive() -> bool:
    return bool((np.array([1e-40], dtype=np.float32) * np.float32(1.0))[0] != 0)


@pytest.mark.skipif(c_build.compiler() is None, reason="no C compiler on this machine")
def test_a_fast_math_library_does_not_flush_the_callers_subnormals(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "halve.c"
    source.write_text("float v2m_halve(float x) { return x * 0.5f; }\n")
    assert subnormals_survive()
    lib = c_build.build("v2m-test-halve", (source,), ("-O2", "-ffast-math", "-shared", "-fPIC"))
    lib.v2m_halve.restype, lib.v2m_halve.argtypes = ctypes.c_float, [ctypes.c_float]
    assert lib.v2m_halve(3.0) == 1.5
    assert subnormals_survive()  # numpy, Hypothesis and the user's code keep IEEE-754 subnormals
    assert list(c_build.user_cache_dir().glob("v2m-test-halve-*.so"))  # built once into the cache
