"""Shared pieces for quantization tests: layers with realistic structure and a saved tiny v2m model."""

from __future__ import annotations

from pathlib import Path

import torch


def correlated_inputs(rows: int, dim: int, seed: int = 0, outliers: int = 4, outlier_scale: float = 10.0) -> torch.Tensor:
    """Activations with correlated channels and a few outlier channels, like a transformer's."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=gen) / dim ** 0.5
    x = torch.randn(rows, dim, generator=gen) @ mix + 0.1 * torch.randn(rows, dim, generator=gen)
    x[:, :outliers] *= outlier_scale
    return x


def saved_tiny_model(folder: Path, seed: int = 0, **overrides) -> tuple[Path, Path]:
    """A tiny transformer (d=64) saved as a v2m.model plus a synthetic corpus with the same tokenizer → (model, corpus)."""
    from tests.models.corpus import VOCAB, make_corpus, tokenizer
    from v2m.models.config import ModelConfig
    from v2m.models.loading import save_model
    from v2m.models.registry import build_model

    corpus = make_corpus(folder / "corpus", pieces=(12, 2, 4))
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_len=128, **overrides)
    model = build_model(config).eval()
    with torch.no_grad():  # norms away from 1 so fusing them is exercised
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.uniform_(0.5, 1.5)
    tok, tok_hash = tokenizer()
    path = folder / "model.safetensors"
    save_model(path, model, config, tok, tok_hash, {"steps": 0, "note": "untrained test model"})
    return path, corpus
