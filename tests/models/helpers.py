"""Shared fixtures for model tests: a tiny model and a trained debug checkpoint on the synthetic corpus."""

from __future__ import annotations

from pathlib import Path

from tests.models.corpus import VOCAB, make_corpus


def tiny_model(seed: int = 0, **overrides):
    import torch

    from v2m.models.config import ModelConfig
    from v2m.models.registry import build_model

    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=128, **overrides)
    return build_model(config).eval()


def train_debug(tmp: Path, steps: int = 60, **overrides) -> tuple[Path, Path, dict]:
    """Train the debug preset for `steps` on a fresh synthetic corpus → (corpus, model path, summary)."""
    from v2m.models.train import RunOptions, train

    corpus = make_corpus(tmp / "corpus")
    out = tmp / "out" / "model.safetensors"
    summary = train(RunOptions(str(corpus), str(out), "debug", {"steps": steps, **overrides}))
    return corpus, out, summary
