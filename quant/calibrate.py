"""Calibration data and the activation statistics the methods need.

Calibration windows are cut at fixed, seeded positions from a token stream the caller hands over (the quantize
stage reads it from a corpus split: `train` by default, so that the held-out split evaluation uses stays
unseen). Their hash — the
sha256 of the exact int64 token windows — is recorded in the quantized checkpoint, so two
checkpoints calibrated on the same data say so.

Statistics are gathered with forward hooks on nn.Linear inputs: the per-input-channel absolute
maximum (SmoothQuant), and the Hessian proxy H = 2·XᵀX / n of the layer's inputs (GPTQ).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from v2m.errors import V2MError


@dataclass(frozen=True)
class Calibration:
    """Token windows [n, T] (int64) and where they came from."""

    ids: torch.Tensor
    corpus: str
    split: str
    sha256: str
    seed: int

    def describe(self) -> dict:
        n, t = self.ids.shape
        return {"corpus": self.corpus, "split": self.split, "samples": n, "tokens_per_sample": t,
                "seed": self.seed, "sha256": self.sha256}


def windows_hash(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def sample_windows(tokens: np.ndarray, samples: int = 32, length: int = 256, seed: int = 0, *,
                   corpus: str = "", split: str = "") -> Calibration:
    """`samples` windows of `length` tokens cut from a token stream at seeded positions (`corpus` and `split`
    only say where the tokens came from: reading a corpus is the quantize stage's job)."""
    if samples < 1:
        raise V2MError(f"--calib-samples must be ≥ 1, got {samples}")
    length = min(length, len(tokens))
    if length < 2:
        raise V2MError(f"{corpus}: the '{split}' split is too small to calibrate on ({len(tokens)} tokens)")
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.integers(0, len(tokens) - length + 1, size=samples))
    ids = torch.as_tensor(np.stack([tokens[s:s + length] for s in starts]), dtype=torch.long)
    return Calibration(ids, str(corpus), split, windows_hash(ids), seed)


def batches(ids: torch.Tensor, batch: int = 8):
    for i in range(0, ids.shape[0], batch):
        yield ids[i:i + batch]


class InputStats:
    """Accumulates statistics of a Linear layer's input rows (float32/float64 on the layer's device)."""

    def __init__(self, in_features: int, hessian: bool, absmax: bool, device):
        self.rows = 0
        self.absmax = torch.zeros(in_features, device=device) if absmax else None
        self.xtx = torch.zeros(in_features, in_features, dtype=torch.float64, device=device) if hessian else None

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).float()
        self.rows += rows.shape[0]
        if self.absmax is not None:
            self.absmax = torch.maximum(self.absmax, rows.abs().amax(0))
        if self.xtx is not None:
            self.xtx += (rows.T @ rows).double()

    def hessian(self) -> torch.Tensor:
        """GPTQ's H = 2 XᵀX / n (float32)."""
        return (2.0 * self.xtx / max(self.rows, 1)).float()


@torch.no_grad()
def collect(model: nn.Module, layers: dict[str, nn.Module], ids: torch.Tensor, hessian: bool = False,
            absmax: bool = False, batch: int = 8) -> dict[str, InputStats]:
    """Run the calibration windows through `model`, recording the inputs of each layer in `layers`."""
    device = next(model.parameters()).device
    stats = {name: InputStats(layer.in_features, hessian, absmax, device) for name, layer in layers.items()}
    handles = [layer.register_forward_pre_hook(lambda _m, args, s=stats[name]: s.add(args[0]))
               for name, layer in layers.items()]
    try:
        for chunk in batches(ids, batch):
            model(chunk.to(device))
    finally:
        for h in handles:
            h.remove()
    return stats
