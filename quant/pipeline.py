"""Quantize a float model in memory: methods composed in a fixed order, layers swapped for QuantLinear.

Order: rotate (changes the basis of the float weights) → smoothquant (moves activation scale
into the weights) → mixed (chooses each layer's scheme) → rtn, gptq or decoupleq (chooses the codes).
`--method rotate+gptq` means rotation then GPTQ; `rotate` alone means rotation then RTN.
GPTQ and decoupleQ run one transformer block at a time: each block's Hessians come from calibration
inputs that already went through the quantized blocks before it (GPTQ's sequential variant).

What combines with what is decided by `parse_method` alone; `v2m quantize --list` prints the table it
implies (`combinations`), so the table and the refusals cannot disagree.
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
from .decoupleq import DecoupleQConfig, decoupleq_quantize
from .formats import SCHEMES, Scheme, check_fits, make_scheme, quantize_tensor
from .gptq import GPTQConfig, gptq_quantize
from .linear import QuantLinear, quant_linears, replace_module
from .mixed import candidate_schemes, mixed_precision
from .rotate import rotate_model
from .smoothquant import smooth_model

METHODS = ("rtn", "gptq", "decoupleq", "smoothquant", "rotate", "mixed")  # as listed in errors
CODE_METHODS = ("rtn", "gptq", "decoupleq")  # what chooses the codes: at most one
NEEDS_CALIBRATION = ("gptq", "decoupleq", "smoothquant", "mixed")
FORMAT_VERSION = 1
SEE_LIST = "v2m quantize --list shows what combines"


@dataclass(frozen=True)
class QuantizeConfig:
    """What `v2m quantize` was asked for. group None = the scheme's default (per-channel for 8-bit
    schemes, 128 for w4/w3/w2, 32 for fp4, 16 for nvfp4; with `mixed` and w8a8 it groups the narrower widths);
    alpha: SmoothQuant migration strength; damp/act_order/block: GPTQ (and decoupleQ's start); budget_bits: average
    stored bits per weight for `mixed`; rounds: decoupleQ's float/integer alternations; seed: rotation."""

    scheme: str = "w8a8"
    method: str = "rtn"
    group: int | None = None
    asym: bool = False
    alpha: float = 0.5
    damp: float = 0.01
    act_order: bool = False
    block: int = 128
    budget_bits: float = 4.5
    rounds: int = 8
    seed: int = 0


def method_parts(method: str) -> set[str]:
    """The set of known methods in `a+b+...` (unknown names are one line pointing at the table)."""
    parts = [m.strip() for m in method.split("+") if m.strip()]
    unknown = [m for m in parts if m not in METHODS]
    if unknown or not parts:
        raise V2MError(f"unknown method '{method}'", f"methods: {', '.join(METHODS)}, combined with '+', e.g. rotate+gptq; "
                       + SEE_LIST)
    return set(parts)


def config_scheme(config: QuantizeConfig) -> Scheme:
    """The --scheme with --group/--asym; under `mixed` a scheme that quantizes activations (w8a8) stays per
    channel and --group is for the narrower weight-only widths mixed may give a layer."""
    if "mixed" in method_parts(config.method) and config.scheme in SCHEMES and SCHEMES[config.scheme][3] != "none":
        return make_scheme(config.scheme, None, False)
    return make_scheme(config.scheme, config.group, config.asym)


def parse_method(method: str, scheme: Scheme, has_calibration: bool) -> set[str]:
    """The set of methods in `a+b+...`, checked against the scheme and for what each needs (one line per problem)."""
    chosen = method_parts(method)
    codes = [m for m in CODE_METHODS if m in chosen]
    if len(codes) > 1:
        raise V2MError(f"--method: {' and '.join(codes)} are alternatives (each chooses the codes), pick one", SEE_LIST)
    if "smoothquant" in chosen and scheme.act == "none":
        raise V2MError(f"smoothquant balances activation and weight quantization; scheme {scheme.name} keeps activations in float",
                       "use it with --scheme w8a8 or fp8; " + SEE_LIST)
    if "mixed" in chosen:
        candidate_schemes(scheme, None, False)  # an integer scheme wider than 2 bits
    # decoupleQ's float zero is for weight-only integer layers (under mixed+w8a8 the w8a8 layers get GPTQ's codes)
    if "decoupleq" in chosen and (scheme.kind != "int" or (scheme.act != "none" and "mixed" not in chosen)):
        raise V2MError(f"decoupleq solves integer weight codes with a float zero; scheme {scheme.name} is not weight-only integer",
                       "use it with --scheme w2, w3, w4 or w8; " + SEE_LIST)
    needs = sorted(chosen & set(NEEDS_CALIBRATION))
    if needs and not has_calibration:
        raise V2MError(f"--method {method} needs calibration data ({', '.join(needs)})", "pass --calib CORPUS (a v2m encode-tokens corpus)")
    return chosen


def combinations() -> list[str]:
    """Every method combination `--list` shows: each code method alone and after the transforms that combine
    with it (rotate, smoothquant, mixed) — the same order quantize_model applies them in."""
    out = []
    for transforms in ((), ("rotate",), ("smoothquant",), ("mixed",), ("rotate", "mixed"), ("smoothquant", "mixed")):
        for code in CODE_METHODS:
            out.append("+".join((*transforms, code)))
    return out


def valid_for(scheme_name: str, method: str) -> str | None:
    """Why `method` is refused with `scheme_name` (None: it combines), by the same checks `v2m quantize` runs."""
    try:
        scheme = config_scheme(QuantizeConfig(scheme=scheme_name, method=method))
        parse_method(method, scheme, has_calibration=True)
    except V2MError as e:
        return e.message
    return None


def quantize_model(model: nn.Module, config: QuantizeConfig, calib: Calibration | None = None) -> dict:
    """Quantize `model` in place (its target Linear layers become QuantLinear); returns the `quant` metadata."""
    if quant_linears(model):
        raise V2MError("this model is already quantized", "quantize the float model it was made from")
    scheme = config_scheme(config)
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
        candidates = candidate_schemes(scheme, config.group, config.asym)
        for name, layer in layers.items():
            for candidate in candidates.values():
                check_fits(candidate, layer.in_features, name)
        allocation = mixed_precision(model, layers, ids, config.budget_bits, candidates)
        schemes = allocation.schemes
        record["mixed"] = {"budget_bits": config.budget_bits, "average_bits": round(allocation.average_bits, 4),
                           "sensitivity_kl": {n: {str(b): round(v, 6) for b, v in s.items()} for n, s in allocation.sensitivity.items()}}
        log.info(f"mixed precision: {allocation.average_bits:.3f} stored bits/weight (budget {config.budget_bits}); "
                 + ", ".join(f"w{b}×{sum(1 for s in schemes.values() if s.bits == b)}" for b in sorted({s.bits for s in schemes.values()})))

    if methods & {"gptq", "decoupleq"}:
        gptq_config = GPTQConfig(config.damp, config.act_order, config.block)
        decouple = DecoupleQConfig(rounds=config.rounds, gptq=gptq_config)
        damps, objective = {}, {}
        groups = structure.layer_groups(model, list(layers))
        with log.progress("quantize", total=len(layers), unit="layers") as advance:
            for group_names in groups:
                stats = collect(model, {n: layers[n] for n in group_names}, ids, hessian=True)
                for name in group_names:
                    if "decoupleq" in methods and schemes[name].act == "none":
                        result = decoupleq_quantize(layers[name].weight, stats[name].hessian(), schemes[name], decouple)
                        objective[name] = [round(e, 6) for e in result.objective]
                        schemes[name] = result.qtensor.scheme
                    else:
                        result = gptq_quantize(layers[name].weight, stats[name].hessian(), schemes[name], gptq_config)
                    if result.damp_used != config.damp:
                        log.warn(f"{name}: Cholesky of the Hessian failed at damp {config.damp}; raised damping to {result.damp_used:g}")
                    damps[name] = result.damp_used
                    _swap(model, name, layers[name], result.qtensor, smooth.get(name))
                    advance(1)
        record["gptq"] = {"damp": config.damp, "act_order": config.act_order, "block": config.block,
                          "damp_raised": {n: d for n, d in damps.items() if d != config.damp}, "sequential": "per block"}
        if objective:
            # the layer-output error relative to the float layer's, GPTQ's start then each kept round
            record["decoupleq"] = {"rounds": config.rounds, "relative_error": objective}
            start = sum(v[0] for v in objective.values()) / len(objective)
            end = sum(v[-1] for v in objective.values()) / len(objective)
            log.info(f"decoupleq: layer-output error {start:.4g} (GPTQ) → {end:.4g}, mean over {len(objective)} layers")
    else:
        for name, layer in layers.items():
            _swap(model, name, layer, quantize_tensor(layer.weight.detach().float(), schemes[name]), smooth.get(name))

    order = ("rotate", "smoothquant", "mixed", "gptq", "decoupleq", "rtn")
    label = "+".join(m for m in order if m in methods) + ("" if methods & set(CODE_METHODS) else "+rtn")
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
