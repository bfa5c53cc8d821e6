"""Model tests run single-threaded: on a shared 2-core machine, torch's thread pool spinning against other
processes made a 10 ms training step take up to a second. Subprocesses get OMP_NUM_THREADS=1 too, so
in-process and subprocess runs compute in the same order (bit-identical weights)."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
