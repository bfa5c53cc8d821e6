"""SmoothQuant: migrate activation outliers into the weights before W8A8 quantization.

Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models" (2023). Per input channel j of a Linear, s_j = max|X_j|^α / max|W_:,j|^(1−α); the layer
computes (X / s)·(W·diag(s))ᵀ, identical in float, but X / s has flatter channels so per-token
int8 loses less. The division is folded into whatever produces X, so it costs nothing at run time:
- qkv and up read a norm's output: the norm's scale (and bias) is divided by s;
- the attention output projection reads softmax·V, linear in V: the value rows of qkv are divided by s;
- the SwiGLU down projection reads silu(gate)·value, linear in value: the value rows of up are divided by s.
Layers with nothing to fold into (a GELU MLP's down projection, Linear layers of other models)
keep s as a `smooth` vector that QuantLinear divides its input by.
"""

from __future__ import annotations

import torch
from torch import nn

from . import structure
from .calibrate import InputStats


def smoothing_factors(act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """s [K] for the layers in `weights` (each [N_i, K]) that share one input with per-channel absmax [K]."""
    w_absmax = torch.stack([w.detach().abs().amax(0).float() for w in weights]).amax(0)
    s = act_absmax.float().clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


@torch.no_grad()
def _scale_columns(layer: nn.Linear, s: torch.Tensor) -> None:
    layer.weight.mul_(s[None, :].to(layer.weight.dtype))


@torch.no_grad()
def _scale_rows(layer: nn.Linear, rows: slice, s: torch.Tensor) -> None:
    layer.weight[rows].div_(s[:, None].to(layer.weight.dtype))
    if layer.bias is not None:
        layer.bias[rows].div_(s.to(layer.bias.dtype))


@torch.no_grad()
def _fold_into_norm(norm: nn.Module, s: torch.Tensor) -> None:
    norm.weight.div_(s.to(norm.weight.dtype))
    if getattr(norm, "bias", None) is not None:
        norm.bias.div_(s.to(norm.bias.dtype))


@torch.no_grad()
def smooth_model(model: nn.Module, stats: dict[str, InputStats], names: list[str], alpha: float = 0.5) -> dict[str, torch.Tensor]:
    """Apply SmoothQuant in place to the layers `names` (float weights, stats from `calibrate.collect`).

    Returns {layer name: s} for layers whose s could not be folded (QuantLinear divides by it at run time).
    """
    unfolded: dict[str, torch.Tensor] = {}
    done: set[str] = set()
    for p in structure.blocks(model):
        n = dict(qkv=f"{p.prefix}.attn.qkv", out=f"{p.prefix}.attn.out", up=f"{p.prefix}.mlp.up", down=f"{p.prefix}.mlp.down")
        d = p.out.in_features
        # row folds first (they change qkv's and up's rows, not the columns smoothed below)
        s_out = smoothing_factors(stats[n["out"]].absmax, [p.out.weight], alpha)
        _scale_rows(p.qkv, slice(2 * d, 3 * d), s_out)
        _scale_columns(p.out, s_out)
        s_down = smoothing_factors(stats[n["down"]].absmax, [p.down.weight], alpha)
        if p.swiglu:
            ff = p.down.in_features
            _scale_rows(p.up, slice(ff, 2 * ff), s_down)
            _scale_columns(p.down, s_down)
        else:
            _scale_columns(p.down, s_down)
            unfolded[n["down"]] = s_down
        for norm, reader, key in ((p.norm1, p.qkv, "qkv"), (p.norm2, p.up, "up")):
            s = smoothing_factors(stats[n[key]].absmax, [reader.weight], alpha)
            _fold_into_norm(norm, s)
            _scale_columns(reader, s)
        done.update(n.values())
    for name in names:
        if name not in done:
            layer = model.get_submodule(name)
            s = smoothing_factors(stats[name].absmax, [layer.weight], alpha)
            _scale_columns(layer, s)
            unfolded[name] = s
    return unfolded
