"""Set-up shared by every test module, run in each pytest-xdist worker before any test module is imported.

Every test starts from the same random state (`_same_random_state`): tests that draw from the global torch or
numpy generators got whatever state the tests before them in their worker left, so which draws they saw changed
with pytest-xdist's scheduling, and a bound that held for most draws failed now and then (CI). A property that
must hold for every draw is tested over many seeded draws in its own test.

librosa is the reference our numpy audio code (stages/rhythm/audio.py) is checked against, and librosa compiles
numba functions with `cache=True` into its own __pycache__. numba does not write those cache files atomically:
two workers compiling into a fresh cache at once (a fresh CI venv) crash the worker that reads a half-written
file. So each pytest-xdist worker gets a numba cache directory of its own, reused across runs; a directory
another test run is using at the moment is left to it and this worker compiles into a temporary one.
"""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from v2m.config import user_cache_dir

_held = []  # the open lock files: each lock lasts as long as this worker process


def _own_numba_cache(worker: str, base: str | None) -> str:
    import fcntl

    path = (Path(base) if base else user_cache_dir() / "numba-tests") / worker
    lock = None
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "w")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another pytest run's worker of the same name holds it, or the cache folder is not writable
        if lock is not None:
            lock.close()
        spare = tempfile.mkdtemp(prefix=f"v2m-numba-{worker}-")
        atexit.register(shutil.rmtree, spare, True)
        return spare
    _held.append(lock)
    return str(path)


# Only in a worker: the controlling process must leave NUMBA_CACHE_DIR alone, or every worker it starts inherits
# the controller's one directory and they share it again. A NUMBA_CACHE_DIR the user set is split per worker too.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    os.environ["NUMBA_CACHE_DIR"] = _own_numba_cache(_worker, os.environ.get("NUMBA_CACHE_DIR"))


@pytest.fixture(autouse=True)
def _same_random_state():
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    if "torch" in sys.modules:  # a test that imports torch itself starts from torch's fixed initial seed anyway
        sys.modules["torch"].manual_seed(0)
