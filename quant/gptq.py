"""GPTQ: quantize a weight column by column, compensating each column's error on the rest.

Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers" (2022), building on Optimal Brain Quantization. With H = 2XᵀX/n from the
layer's calibration inputs, each quantized column's error is spread over the not-yet-quantized
columns through the upper Cholesky factor of H⁻¹; updates are applied lazily in blocks of
`block` columns. Options as in the reference implementation:
- `damp`: λ = damp · mean(diag H) added to the diagonal; when the Cholesky factorisation still
  fails, λ is multiplied by 10 (up to 4 times) and the caller is told (it logs it on stderr).
- `act_order`: columns in order of decreasing diag(H) (the most-activated first). Groups then
  keep their original contiguous columns ("static groups": scales from the original weight),
  so the packed layout and kernels need no column permutation.
- groups: without act_order, a group's scale is chosen when its first column is reached, from the
  already-updated weights, as in the paper's grouped variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .formats import Params, QTensor, Scheme, fake_quant, group_params, params_for, quantize_tensor, tensor_global_scale


@dataclass(frozen=True)
class GPTQConfig:
    """damp: fraction of mean(diag H) added to H's diagonal; block: columns per lazy update."""

    damp: float = 0.01
    act_order: bool = False
    block: int = 128


@dataclass
class GPTQResult:
    qtensor: QTensor
    damp_used: float          # the damping that let Cholesky succeed (≥ config.damp)
    dead_columns: int         # input channels never active in calibration (weights zeroed, as in GPTQ)


def inverse_cholesky(h: torch.Tensor, damp: float, tries: int = 5) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (H + λI)⁻¹ and the damp fraction that worked; raises after `tries` × 10."""
    mean_diag = float(torch.diag(h).mean())
    eye = torch.eye(h.shape[0], device=h.device, dtype=h.dtype)
    for attempt in range(tries):
        damp_now = damp * (10 ** attempt)
        try:
            lower = torch.linalg.cholesky(h + damp_now * mean_diag * eye)
            h_inv = torch.cholesky_inverse(lower)
            return torch.linalg.cholesky(h_inv, upper=True), damp_now
        except torch.linalg.LinAlgError:
            continue
    raise torch.linalg.LinAlgError(f"Hessian not positive definite even with damp {damp_now}")


def _params_at(w: torch.Tensor, scheme: Scheme, global_scale) -> tuple[torch.Tensor, torch.Tensor | None]:
    p = group_params(w, scheme, global_scale)
    return p.scale, p.zero


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, scheme: Scheme, config: GPTQConfig = GPTQConfig(),
                  grid: Params | None = None) -> GPTQResult:
    """Quantize `weight` [N, K] with GPTQ given H [K, K]; returns the packed tensor (codes exactly on the grid).

    `grid` fixes every group's scale and zero ([N, G] each) instead of choosing them: only the codes are solved
    (decoupleQ's integer step)."""
    w = weight.detach().float().clone()
    h = hessian.detach().float().clone()
    n, k = w.shape
    group = scheme.group or k
    global_scale = tensor_global_scale(weight, scheme)

    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    if grid is not None:
        static = grid
    else:
        static = params_for(w, scheme) if (scheme.group == 0 or config.act_order) else None
    scales = torch.zeros(n, k // group, device=w.device)
    zeros = torch.zeros(n, k // group, device=w.device) if scheme.kind == "int" else None
    if static is not None:
        scales.copy_(static.scale)
        if zeros is not None:
            zeros.copy_(static.zero)

    perm = torch.argsort(torch.diag(h), descending=True) if config.act_order else torch.arange(k, device=w.device)
    w, h = w[:, perm], h[perm][:, perm]
    h_inv, damp_used = inverse_cholesky(h, config.damp)

    q = torch.zeros_like(w)
    for i1 in range(0, k, config.block):
        i2 = min(i1 + config.block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h_inv1 = h_inv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])          # original column index
            g = col // group
            if static is None and col % group == 0:
                # the group's scale from its current (already error-compensated) columns
                ahead = torch.cat([w1[:, i:], w[:, i2:]], 1)[:, :group]
                scales[:, g], z = _params_at(ahead, scheme, global_scale)
                if zeros is not None:
                    zeros[:, g] = z
            column = w1[:, i]
            zero = None if zeros is None else zeros[:, g]
            qcol = fake_quant(column, scales[:, g], zero, scheme)
            q[:, i1 + i] = qcol
            err = (column - qcol) / h_inv1[i, i]
            w1[:, i:] -= err[:, None] * h_inv1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ h_inv[i1:i2, i2:]

    q = q[:, torch.argsort(perm)]
    params = Params(scales, zeros, global_scale)
    return GPTQResult(quantize_tensor(q, scheme, params), damp_used, int(dead.sum()))
