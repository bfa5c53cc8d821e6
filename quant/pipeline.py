"""Quantize a float model in memory: methods composed in a fixed order, layers swapped for QuantLinear.

Order: rotate (changes the basis of the float weights) → smoothquant (moves activation scale
into the weights) → mixed (chooses each layer's scheme) → rtn or gptq (chooses the codes).
`--method rotate+gptq` means rotation then GPTQ; `rotate` alone means rotation then RTN.
GPTQ runs one transformer block at a time: each block's Hessians come from calibration inputs
that already went through the quantized blocks before it (the paper's sequential variant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from v2m import log
from v2m.config import to_dict
from v2m.errors import V2MError

from . import structure
from .calibrate import Calibration, collect
from .formats import SCHEMES, Scheme, check_fits, make_scheme, quantize_tensor
from .gptq import GPTQConfig, gptq_quantize
from .linear import QuantLinear, quant_linears, replace_module
from .mixed import mixed_precision
from .rotate import rotate_model
from .smoothquant import smooth_model

METHODS = ("rtn", "gptq", "smoothquant", "rotate", "mixed")  # as listed in errors
FORMAT_VERSION = 1


@dataclass(frozen=True)
class QuantizeConfig:
    """What `v2m quantize` was asked for. group None = the scheme's default (per-channel for 8-bit
    schemes, 128 for w4/w3/w2, 32 for fp4, 16 for nvfp4); alpha: SmoothQuant migration strength;
    damp/act_order/block: GPTQ; budget_bits: average stored bits per weight for `mixed`; seed: rotation."""

    scheme: str = "w8a8"
    method: str = "rtn"
    group: int | None = None
    asym: bool = False
    alpha: float = 0.5
    damp: float = 0.01
    act_order: bool = False
    block: int = 128
    budget_bits: float = 4.5
    seed: int = 0


def parse_method(method: str, scheme: Scheme, has_calibration: bool) -> set[str]:
    """The set of methods in `a+b+...`, checked for what each needs (one line per problem)."""
    parts = [m.strip() for m in method.split("+") if m.strip()]
    unknown = [m for m in parts if m not in METHODS]
    if unknown or not parts:
        raise V2MError(f"unknown method '{method}'", f"methods: {', '.join(METHODS)}, combined with '+', e.g. rotate+gptq")
    chosen = set(parts)
    if {"rtn", "gptq"} <= chosen:
        raise V2MError("--method: rtn and gptq are alternatives, pick one")
    if "smoothquant" in chosen and scheme.act == "none":
        raise V2MError(f"smoothquant balances activation and weight quantization; scheme {scheme.name} keeps activations in float",
                       "use it with --scheme w8a8 or fp8")
    if "mixed" in chosen and scheme.kind != "int":
        raise V2MError("--method mixed assigns integer weight widths (2/3/4/8 bits) per layer", "use it with --scheme w4 (or w2, w3, w8)")
    needs = sorted(chosen & {"gptq", "smoothquant", "mixed"})
    if needs and not has_calibration:
        raise V2MError(f"--method {method} needs calibration data ({', '.join(needs)})", "pass --calib CORPUS (a v2m encode-tokens corpus)")
    return chosen


def quantize_model(model: nn.Module, config: QuantizeConfig, calib: Calibration | None = None) -> dict:
    """Quantize `model` in place (its target Linear layers become QuantLinear); returns the `quant` metadata."""
    if quant_linears(model):
        raise V2MError("this model is already quantized", "quantize the float model it was made from")
    scheme = make_scheme(config.scheme, config.group, config.asym)
    methods = parse_method(config.method, scheme, calib is not None)
    model.eval()
    layers = structure.target_linears(model)
    if not layers:
        raise V2MError("the model has no Linear layers to quantize")
    for name, layer in layers.items():
        check_fits(scheme, layer.in_features, name)
    ids = calib.ids.to(next(model.parameters()).device) if calib is not None else None
    record: dict = {}

    if "rotate" in methods:
        record["rotate"] = note = rotate_model(model, config.seed)
        log.info(f"rotated the residual stream ({note['residual']}, d={note['dim']}), norms fused")

    smooth: dict[str, torch.Tensor] = {}
    if "smoothquant" in methods:
        stats = collect(model, layers, ids, absmax=True)
        smooth = smooth_model(model, stats, list(layers), config.alpha)
        record["smoothquant"] = {"alpha": config.alpha, "unfolded_layers": sorted(smooth)}
        log.info(f"smoothquant α={config.alpha}: {len(layers) - len(smooth)} layers folded, {len(smooth)} with a run-time scale")

    schemes = {name: scheme for name in layers}
    if "mixed" in methods:
        group = config.group if config.group is not None else SCHEMES["w4"][2]
        for name, layer in layers.items():
            check_fits(make_scheme("w4", group, config.asym), layer.in_features, name)
        allocation = mixed_precision(model, layers, ids, config.budget_bits, group, config.asym)
        schemes = allocation.schemes
        record["mixed"] = {"budget_bits": config.budget_bits, "average_bits": round(allocation.average_bits, 4),
                           "sensitivity_kl": {n: {str(b): round(v, 6) for b, v in s.items()} for n, s in allocation.sensitivity.items()}}
        log.info(f"mixed precision: {allocation.average_bits:.3f} stored bits/weight (budget {config.budget_bits}); "
                 + ", ".join(f"w{b}×{sum(1 for s in schemes.values() if s.bits == b)}" for b in sorted({s.bits for s in schemes.values()})))

    if "gptq" in methods:
        gptq_config = GPTQConfig(config.damp, config.act_order, config.block)
        damps = {}
        for group_names in structure.layer_groups(model, list(layers)):
            stats = collect(model, {n: layers[n] for n in group_names}, ids, hessian=True)
            for name in group_names:
                result = gptq_quantize(layers[name].weight, stats[name].hessian(), schemes[name], gptq_config)
                if result.damp_used != config.damp:
                    log.warn(f"{name}: Cholesky of the Hessian failed at damp {config.damp}; raised damping to {result.damp_used:g}")
                damps[name] = result.damp_used
                _swap(model, name, layers[name], result.qtensor, smooth.get(name))
        record["gptq"] = {"damp": config.damp, "act_order": config.act_order, "block": config.block,
                          "damp_raised": {n: d for n, d in damps.items() if d != config.damp}, "sequential": "per block"}
    else:
        for name, layer in layers.items():
            _swap(model, name, layer, quantize_tensor(layer.weight.detach().float(), schemes[name]), smooth.get(name))

    order = ("rotate", "smoothquant", "mixed", "gptq", "rtn")
    label = "+".join(m for m in order if m in methods) + ("" if methods & {"gptq", "rtn"} else "+rtn")
    return {
        "version": FORMAT_VERSION,
        "scheme": config.scheme,
        "method": label,
        "hyperparameters": to_dict(config),
        "calibration": calib.describe() if calib is not None else None,
        "layers": {name: schemes[name].to_json() for name in layers},
        **record,
    }


def _swap(model: nn.Module, name: str, layer: nn.Linear, qtensor, smooth: torch.Tensor | None) -> None:
    bias = None if layer.bias is None else layer.bias.detach()
    replace_module(model, name, QuantLinear.from_qtensor(qtensor, bias, smooth).to(layer.weight.device))
