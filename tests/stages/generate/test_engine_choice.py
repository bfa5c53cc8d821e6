"""Which decode engine `generate` compiles for on a GPU: the graph of eager kernels for everyday pieces, Inductor's
kernels once a piece is long enough to win back their compile (sooner when Inductor's cache is warm)."""

from __future__ import annotations

import pytest
import torch

from tests.stages.generate.test_generate import debug_model  # noqa: F401  (fixture)


def test_on_the_cpu_it_is_torch_compile_default(debug_model):  # noqa: F811
    from v2m.stages.generate.sampler import cuda_engine

    assert cuda_engine(debug_model[1].model, steps=10**6) is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA engines need a GPU")
def test_long_pieces_get_inductor_sooner_with_a_warm_cache(debug_model, tmp_path, monkeypatch):  # noqa: F811
    from v2m.models.engines import graph
    from v2m.stages.generate.sampler import INDUCTOR_STEPS_COLD, INDUCTOR_STEPS_WARM, cuda_engine
    from v2m.stages.session import open_model

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    model = open_model(debug_model[0], device="cuda").loaded.model
    assert cuda_engine(model, 600) == "graph"
    assert cuda_engine(model, INDUCTOR_STEPS_WARM) == "graph"  # cold cache: not yet
    assert cuda_engine(model, INDUCTOR_STEPS_COLD) == "graph+inductor"
    graph._ready_marker(model, 1).touch()  # what a finished Inductor capture leaves
    assert cuda_engine(model, INDUCTOR_STEPS_WARM) == "graph+inductor"
    assert cuda_engine(model, INDUCTOR_STEPS_WARM, batch=8) == "graph"  # another batch: another compile


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA engines need a GPU")
def test_an_inductor_capture_marks_the_cache_warm(debug_model, tmp_path, monkeypatch):  # noqa: F811
    from v2m.models.engines import graph
    from v2m.models.engines.decoder import Decoder
    from v2m.models.sampling import Sampling
    from v2m.stages.session import open_model

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    model = open_model(debug_model[0], device="cuda").loaded.model
    assert not graph.inductor_ready(model, 1)
    decoder = Decoder(model, 1, 64, "graph+inductor")
    decoder.prefill(torch.tensor([[1, 3]], device="cuda"))
    decoder.step_draw([5], 2, Sampling(1.0, 0, 0.95), None, torch.Generator(device="cuda").manual_seed(0))
    assert graph.inductor_ready(model, 1) and any(tmp_path.iterdir())
