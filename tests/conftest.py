"""Set-up shared by every test module, run in each pytest-xdist worker before any test module is imported.

librosa is the reference our numpy audio code (stages/audio_rhythm.py) is checked against, and librosa compiles
numba functions with `cache=True` into its own __pycache__. numba does not write those cache files atomically:
two workers compiling into a fresh cache at once (a fresh CI venv) crash the worker that reads a half-written
file. So each worker gets a numba cache directory of its own, reused across runs; a directory another test run
is using at the moment is left to it and this worker compiles into a temporary one.
"""

import atexit
import os
import shutil
import tempfile

from v2m.config import user_cache_dir


def _own_numba_cache(worker: str) -> str:
    import fcntl

    path = user_cache_dir() / "numba-tests" / worker
    path.mkdir(parents=True, exist_ok=True)
    lock = open(path.with_suffix(".lock"), "w")  # held (and closed by the OS) for this process's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another pytest run's worker of the same name holds it
        lock.close()
        spare = tempfile.mkdtemp(prefix=f"v2m-numba-{worker}-")
        atexit.register(shutil.rmtree, spare, True)
        return spare
    _own_numba_cache.lock = lock  # keep the descriptor (and so the lock) alive
    return str(path)


_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = _own_numba_cache(_worker)
