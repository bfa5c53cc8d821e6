"""Several processes using librosa's beat tracker for the first time at once (a fresh install, `run --jobs`,
parallel tests) must not crash: metrics_rhythm.librosa_ready compiles/loads numba's kernels under a file lock.
Without the lock this crashed one process in three (segmentation fault) on the 2-core dev machine."""

import subprocess
import sys

SCRIPT = """
import numpy as np
from v2m.stages.metrics_rhythm import audio_beats
sr = 22050
y = np.zeros(sr * 4, dtype=np.float32)
for t in np.arange(0.5, 3.5, 0.5):
    y[int(t * sr):int(t * sr) + 200] = 1.0
bpm, beats = audio_beats(y, sr)
assert 110 < bpm < 130 and len(beats) >= 4, (bpm, beats)
"""


def test_concurrent_first_use_of_the_beat_tracker(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read().decode()[-300:]) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert (tmp_path / "cache" / "v2m" / "librosa-numba.lock").exists()
