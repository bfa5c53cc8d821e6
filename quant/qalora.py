"""Quantization-aware low-rank fine-tuning of a diffusion denoiser (EfficientDM, He et al. 2024, "EfficientDM:
Efficient Quantization-Aware Fine-Tuning of Low-Bit Diffusion Models"), for the bits where PTQ falls short (w4a8).

Data-free distillation: the float model's own sampler runs on the calibration conditions (the caller's `sample()`,
the same one trajectory calibration uses) and every model call along the trajectory is recorded — its inputs
(noisy roll, t, conditions) and the float model's output. The student is the same model with each main Linear's
weight W frozen and a low-rank adapter B·A added (LoRA, B initialised to zero, so training starts at the PTQ
model); its forward runs what the quantized model will run: the weight W + B·A quantized with the scheme's RTN
grid and the input with the layer's static range of the current timestep group, both through the
straight-through estimator, so the gradient reaches A and B through the rounding. The loss is the relative error
of the output against the float model's, ||v_s − v_f||² / ||v_f||² (the v_err the evaluation reports).

After training the adapters are **merged into the float weights** (W ← W + B·A) and the model is quantized as
usual (quant/timestep.py, RTN weights, ranges recalibrated on the merged model). Merging (EfficientDM's choice
too: the LoRA is fused with the weight before quantization) costs nothing at run time — the same packed layers,
the same kernels, the same file size — where separate float adapters would add two float matmuls per layer and a
second code path to every kernel; the quantizer of the merged weight is exactly the one the student trained
through (same RTN grid), so what was learned survives the merge. EfficientDM also learns the activation scales
per timestep (TALSQ); here the ranges stay the calibrated ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from v2m import log

from .linear import replace_module

CHECK_EVERY = 25  # optimizer steps between checks of the error over every recorded call


@dataclass(frozen=True)
class QALoRAConfig:
    rank: int = 8
    steps: int = 150      # optimizer steps
    lr: float = 1e-3
    batch: int = 4        # rows (windows × guidance halves) of one recorded call per step
    seed: int = 0


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """||out − reference||² / ||reference||²: the fine-tune's loss, and the v_err of sensitivity and evaluation."""
    return ((out - reference) ** 2).sum() / (reference ** 2).sum().clamp(min=1e-12)


class LoRAFakeQuantLinear(nn.Module):
    """A frozen Linear plus a trainable low-rank B·A, run as its quantized version will run: weight W + B·A on the
    scheme's grid (`quantize_weight`: float weight → its dequantized RTN codes) and input fake-quantized
    (`quantize_input`: x, timestep group → x on that group's grid), both with straight-through gradients."""

    def __init__(self, linear: nn.Linear, rank: int, quantize_weight, quantize_input, generator: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().float().clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        k, n = linear.in_features, linear.out_features
        self.A = nn.Parameter(torch.randn(rank, k, generator=generator) / math.sqrt(k))
        self.B = nn.Parameter(torch.zeros(n, rank))
        self.quantize_weight, self.quantize_input = quantize_weight, quantize_input
        self.group = 0

    def merged(self) -> torch.Tensor:
        return (self.weight + self.B @ self.A).detach()

    def forward(self, x):
        x = x + (self.quantize_input(x.detach(), self.group) - x).detach()
        w = self.weight + self.B @ self.A
        with torch.no_grad():
            wq = self.quantize_weight(w.detach())
        return F.linear(x, w + (wq - w).detach(), self.bias)


@torch.no_grad()
def record_calls(model: nn.Module, sample) -> list[tuple[tuple, dict, torch.Tensor]]:
    """Run `sample()` (the float model's sampler) and keep every model call's inputs — positional, and keyword
    tensors such as a self-conditioned denoiser's `x0_prev` — and output: [(args, kwargs, output)]."""
    calls = []

    def hook(_m, args, kwargs, output):
        tensors = {k: v.detach().clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        calls.append((tuple(a.detach().clone() for a in args), tensors, output.detach().clone()))

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        sample()
    finally:
        handle.remove()
    return calls


def qalora_finetune(model: nn.Module, layers: dict[str, nn.Linear], calls, quantize_weight, quantize_input,
                    group_of_t, config: QALoRAConfig) -> dict:
    """Fine-tune low-rank adapters on `layers` of `model` (in place) to match the recorded float outputs `calls`,
    then merge them into the layers' float weights. `quantize_weight(name, w)` / `quantize_input(name, x, group)`
    simulate the final quantization; `group_of_t(t)` is the timestep group of a step. Returns what the checkpoint
    records: rank, steps, lr, the relative loss at the start and the end (mean of the first / last tenth)."""
    g = torch.Generator().manual_seed(config.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for name, layer in layers.items():
        wrapped[name] = LoRAFakeQuantLinear(layer, config.rank, lambda w, n=name: quantize_weight(n, w),
                                            lambda x, k, n=name: quantize_input(n, x, k), g)
        replace_module(model, name, wrapped[name])
    params = [p for m in wrapped.values() for p in (m.A, m.B)]
    optimizer = torch.optim.Adam(params, lr=config.lr)

    def use_group(args) -> None:  # the fake-quantized inputs take the ranges of the call's timestep group
        group = group_of_t(float(args[1].reshape(-1)[0]))
        for m in wrapped.values():
            m.group = group

    @torch.no_grad()
    def recorded_error() -> float:
        """The simulated quantized model's relative error over every recorded call, all rows (deterministic)."""
        errs = []
        for args, kwargs, target in calls:
            use_group(args)
            errs.append(float(relative_error(model(*args, **kwargs), target)))
        return sum(errs) / len(errs)

    model.train(False)  # no dropout here; eval-mode forwards, with gradients in the fine-tune
    before = recorded_error()
    # the adapters kept are those of the lowest error over every recorded call, checked every CHECK_EVERY steps
    # (B = 0, plain RTN, is the first candidate): on the self-conditioned model the straight-through fine-tune
    # raised that error (0.0134 → 0.0210 in 150 steps; BENCHMARKS.md, issue 21), where on the previous model it
    # lowered it (0.0069 → 0.0047)
    best = (before, 0, [(m.A.detach().clone(), m.B.detach().clone()) for m in wrapped.values()])
    losses = []
    with log.progress("qalora", total=config.steps, unit="steps") as advance:
        for _ in range(config.steps):
            args, kwargs, target = calls[int(torch.randint(len(calls), (1,), generator=g))]
            rows = torch.randperm(target.shape[0], generator=g)[:config.batch]
            use_group(args)
            with torch.enable_grad():
                out = model(*(a[rows] for a in args), **{k: v[rows] for k, v in kwargs.items()})
                loss = relative_error(out, target[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            advance(1)
            if len(losses) % CHECK_EVERY == 0 or len(losses) == config.steps:
                error = recorded_error()
                if error < best[0]:
                    best = (error, len(losses), [(m.A.detach().clone(), m.B.detach().clone()) for m in wrapped.values()])
    with torch.no_grad():
        for m, (a, b) in zip(wrapped.values(), best[2]):
            m.A.copy_(a)
            m.B.copy_(b)
    after = best[0]
    for name, m in wrapped.items():
        linear = nn.Linear(m.weight.shape[1], m.weight.shape[0], bias=m.bias is not None)
        linear.weight.data.copy_(m.merged())
        if m.bias is not None:
            linear.bias.data.copy_(m.bias.detach())
        replace_module(model, name, linear)
    tenth = max(1, len(losses) // 10)
    start, end = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
    log.info(f"qalora: {len(wrapped)} layers, rank {config.rank}, {config.steps} steps: relative output error "
             f"{start:.4g} → {end:.4g} (training batches), {before:.4g} → {after:.4g} over every recorded call "
             f"(adapters of step {best[1]} kept{'; 0 = none: plain RTN' if best[1] == 0 else ''})")
    return {"rank": config.rank, "steps": config.steps, "lr": config.lr, "batch": config.batch, "layers": len(wrapped),
            "calls": len(calls), "loss_start": float(f"{start:.4g}"), "loss_end": float(f"{end:.4g}"),
            "recorded_error_before": float(f"{before:.4g}"), "recorded_error_after": float(f"{after:.4g}"),
            "kept_step": best[1]}
