"""decoupleQ: low-bit weights by solving the integer codes and the float scales/zeros in turn.

Guo et al., "decoupleQ: Towards 2-bit Post-Training Uniform Quantization via Decoupling Parameters into
Integer and Floating Points" (2024). A quantized weight is split into integer codes Q (per weight, in
[0, 2^b - 1]) and float parameters (s, z) per group, Ŵ = s·Q + z, and the two are optimized alternately on
the layer's output error on calibration activations — the same quadratic form GPTQ minimises, with
H = 2XᵀX/n:

    min  Σ_rows (w - ŵ) H (w - ŵ)ᵀ

- **integer step** (s, z fixed): the codes of each row, a box-constrained integer least-squares problem,
  solved approximately: GPTQ's column-by-column rounding with error feedback (quant/gptq.py) gives the start,
  then exact coordinate descent on one code at a time (`refine_codes`) improves it on each new grid — a
  descent step, where re-running GPTQ on the new grid was measured to undo the float step's gain;
- **float step** (Q fixed): (s, z) of every group of a row are the least-squares solution of a 2G × 2G linear
  system per row (G groups per row), solved exactly in closed form — so the zero is any real number (stored as
  float16, `Scheme.float_zero`), not an integer code, and a 4-level 2-bit grid can sit where the row's weights
  are instead of always straddling 0.

The first grid is GPTQ's own (min/max of the error-compensated groups); a round is kept only if it lowers
the objective, so the result is never worse than GPTQ's on the calibration data. The stored grid is
float16, so each round's (s, z) are rounded to it before the codes are chosen against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .formats import Params, QTensor, Scheme, quantize_tensor, unpack
from .gptq import GPTQConfig, gptq_quantize

MAX_ZERO = 1024.0
REFINE_BLOCK = 64  # columns per lazy update of the coordinate descent  # |zero| beyond this (a near-constant group with a tiny scale) keeps the previous grid


@dataclass(frozen=True)
class DecoupleQConfig:
    """rounds: float-step/integer-step alternations after the GPTQ start; sweeps: coordinate-descent passes over
    the codes per integer step; gptq: the start's settings."""

    rounds: int = 8
    sweeps: int = 2
    gptq: GPTQConfig = GPTQConfig()


@dataclass
class DecoupleQResult:
    qtensor: QTensor
    damp_used: float
    objective: list[float]  # (w - ŵ) H (w - ŵ)ᵀ summed over rows, relative to w H wᵀ: the start, then each kept round


def float_zero_scheme(scheme: Scheme) -> Scheme:
    """The integer scheme with decoupleQ's float zero point (asymmetric by construction)."""
    return Scheme(scheme.name, scheme.kind, scheme.bits, scheme.group, symmetric=False, act=scheme.act, float_zero=True)


def layer_error(weight: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """Σ_rows (w - ŵ) H (w - ŵ)ᵀ: the layer-output error on the calibration inputs (up to a constant)."""
    e = (weight - approx).double()
    return float(((e @ hessian.double()) * e).sum())


def _codes(qt: QTensor) -> torch.Tensor:
    return unpack(qt.packed, qt.scheme.bits, qt.shape[1]).double()


def solve_scales(weight: torch.Tensor, codes: torch.Tensor, hessian: torch.Tensor, group: int,
                 start: tuple[torch.Tensor, torch.Tensor], ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """decoupleQ's float step: per row, the (s, z) of its G groups minimising (w - s·q - z) H (...)ᵀ for fixed codes q.

    The normal equations of row i are M_i θ_i = b_i with θ_i = (s_1..s_G, z_1..z_G) and, for groups g, h,
    M_i = [[Σ q H q, Σ q H 1], [Σ 1 H q, Σ 1 H 1]] summed over k ∈ g, l ∈ h. They are solved for the step from
    `start` (s, z) with a small ridge, so a singular group (all its codes equal) keeps its start.
    Returns (s, z) [N, G] float64.
    """
    n, k = codes.shape
    groups = k // group
    h = hessian.double()
    w = weight.double()
    q = codes.reshape(n, groups, group)
    hr = h.reshape(k, groups, group)
    t = torch.einsum("khl,nhl->nkh", hr, q)                       # [N, K, G]: Σ_{l∈h} H_kl q_l
    uu = torch.einsum("ngk,ngkh->ngh", q, t.reshape(n, groups, group, groups))
    s1 = hr.sum(-1)                                               # [K, G]: Σ_{l∈h} H_kl
    u1 = torch.einsum("ngk,gkh->ngh", q, s1.reshape(groups, group, groups))
    ones = s1.reshape(groups, group, groups).sum(1)               # [G, G]
    m = torch.cat([torch.cat([uu, u1], 2), torch.cat([u1.transpose(1, 2), ones.expand(n, -1, -1)], 2)], 1)
    hw = (w @ h).reshape(n, groups, group)
    b = torch.cat([(q * hw).sum(-1), hw.sum(-1)], 1)              # [N, 2G]
    theta0 = torch.cat([start[0].double(), start[1].double()], 1)
    residual = b - torch.einsum("npq,nq->np", m, theta0)
    diag = torch.diagonal(m, dim1=1, dim2=2).mean(-1).clamp(min=1e-30)
    eye = torch.eye(2 * groups, dtype=torch.float64)
    step = torch.linalg.solve(m + ridge * diag[:, None, None] * eye, residual.unsqueeze(-1)).squeeze(-1)
    theta = theta0 + step
    return theta[:, :groups], theta[:, groups:]


def _as_grid(s: torch.Tensor, z: torch.Tensor, fallback: Params) -> Params:
    """(s, z) of Ŵ = s·q + z as the stored grid (code - zero)·scale, in float16; unusable groups keep `fallback`."""
    scale = s.half().float()
    zero = (-z / s).half().float()
    ok = (s.abs() > 1e-7) & torch.isfinite(zero) & (zero.abs() <= MAX_ZERO) & torch.isfinite(scale)
    return Params(torch.where(ok, scale, fallback.scale), torch.where(ok, zero, fallback.zero))


@torch.no_grad()
def decoupleq_quantize(weight: torch.Tensor, hessian: torch.Tensor, scheme: Scheme,
                       config: DecoupleQConfig = DecoupleQConfig()) -> DecoupleQResult:
    """Quantize `weight` [N, K] (integer scheme) with decoupleQ given H [K, K]; the result has a float zero."""
    scheme = float_zero_scheme(scheme)
    n, k = weight.shape
    group = scheme.group or k
    w = weight.detach().float()
    dead = torch.diag(hessian) == 0
    w = torch.where(dead[None, :], torch.zeros_like(w), w)  # as GPTQ: inputs never seen contribute nothing
    h = hessian.float().clone()
    h[dead, dead] = 1.0
    norm = max(layer_error(w, torch.zeros_like(w), h), 1e-30)

    start = gptq_quantize(w, h, scheme, config.gptq)
    best, damp = start.qtensor, start.damp_used
    objective = [layer_error(w, best.dequantize(), h) / norm]
    for _ in range(config.rounds):
        grid = Params(best.scale.float(), best.zero.float())
        s, z = solve_scales(w, _codes(best), h, group, (grid.scale.double(), (-grid.zero * grid.scale).double()))
        grid = _as_grid(s, z, grid)
        codes = refine_codes(w, _codes(best), grid, h, group, scheme.bits, config.sweeps)
        candidate = quantize_tensor(_dequantize(codes, grid, group), scheme, grid)
        error = layer_error(w, candidate.dequantize(), h) / norm
        if error >= objective[-1] * (1 - 1e-4):  # converged: keep what we have
            break
        best, objective = candidate, objective + [error]
    return DecoupleQResult(best, damp, objective)


def refine_codes(weight: torch.Tensor, codes: torch.Tensor, grid: Params, hessian: torch.Tensor, group: int,
                 bits: int, sweeps: int) -> torch.Tensor:
    """decoupleQ's integer step on a fixed grid: exact coordinate descent on each code in turn, all rows at once.

    Moving code k of a row by δ changes the objective by -2·s·δ·(eH)_k + s²·δ²·H_kk (e = w - ŵ), a parabola
    whose best integer step is round((eH)_k / (s·H_kk)) clamped to the code range — so no step raises the
    error, and starting from GPTQ's codes the result is at least as good as GPTQ's. Returns float64 codes [N, K]."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of small column operations: threads cost more than they give (3× here)
    try:
        return _descend(weight, codes, grid, hessian, group, bits, sweeps)
    finally:
        torch.set_num_threads(threads)


def _descend(weight, codes, grid, hessian, group, bits, sweeps) -> torch.Tensor:
    codes = codes.float().clone()
    h = hessian.float()
    w = weight.float()
    scale = grid.scale.float().repeat_interleave(group, 1)
    zero = grid.zero.float().repeat_interleave(group, 1)
    maxq = float(2 ** bits - 1)
    diag = torch.diagonal(h)
    k = codes.shape[1]
    for _ in range(sweeps):
        # (eH) afresh each sweep (no drift), then kept current lazily in blocks of columns as GPTQ does: a move
        # of column c updates the rest of its block at once and the columns after the block once per block
        e_h = (w - (codes - zero) * scale) @ h
        moved = 0
        for b1 in range(0, k, REFINE_BLOCK):
            b2 = min(b1 + REFINE_BLOCK, k)
            step_w = torch.zeros(codes.shape[0], b2 - b1)
            for col in range(b1, b2):
                s = scale[:, col]
                step = torch.round(e_h[:, col] / (s * diag[col]).where(s != 0, torch.ones_like(s)))
                new = (codes[:, col] + step).clamp(0, maxq)
                delta = new - codes[:, col]
                codes[:, col] = new
                change = s * delta
                step_w[:, col - b1] = change
                e_h[:, col:b2] -= change[:, None] * h[col, col:b2][None, :]
            moved += int((step_w != 0).sum())
            if b2 < k:
                e_h[:, b2:] -= step_w @ h[b1:b2, b2:]
        if not moved:
            break
    return codes.double()


def _dequantize(codes: torch.Tensor, grid: Params, group: int) -> torch.Tensor:
    """Float32 weight [N, K] of float codes on a grid ([N, G] scale and zero)."""
    scale = grid.scale.float().repeat_interleave(group, 1)
    zero = grid.zero.float().repeat_interleave(group, 1)
    return (codes.float() - zero) * scale
