"""Mixed precision: bits per layer from measured sensitivity, under an average size budget.

The --scheme is the widest a layer gets (w8a8 layers keep per-channel weights and int8 activations; the narrower
widths are weight-only, grouped by --group), and the budget decides which layers go narrower.

Each candidate layer is quantized alone (round-to-nearest) at each candidate bit width and the
damage is measured on calibration windows as KL(p_float ‖ p_quantized) of the next-token
distributions — a direct, end-to-end sensitivity in the spirit of HAWQ's per-layer sensitivity
(Dong et al. 2019), measured instead of estimated from Hessian traces. Assuming the damages add
up, bits are then allocated greedily: start every layer at the lowest width and repeatedly give
more bits to the layer with the largest KL saved per extra stored bit, while the average stored
bits per weight (codes + scales + zero points) stays within `budget_bits`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from v2m.errors import V2MError

from .formats import QTensor, Scheme, make_scheme, quantize_tensor

CANDIDATE_BITS = (2, 3, 4, 8)
SENSITIVITY_WINDOWS, SENSITIVITY_TOKENS = 8, 128  # calibration slice each sensitivity is measured on


def stored_bits(scheme: Scheme, shape: tuple[int, int]) -> float:
    """Average stored bits per weight of a layer: codes, scales and zero points."""
    probe = quantize_tensor(torch.zeros(shape[0], shape[1]), scheme)
    return 8.0 * probe.nbytes() / (shape[0] * shape[1])


@torch.no_grad()
def _kl(model: nn.Module, ids: torch.Tensor, ref_logp: torch.Tensor) -> float:
    logp = F.log_softmax(model(ids).float(), -1)
    return float((ref_logp.exp() * (ref_logp - logp)).sum(-1).mean())


@dataclass
class Allocation:
    schemes: dict[str, Scheme]
    sensitivity: dict[str, dict[int, float]]  # layer → bits → KL (nats/token) when only that layer is quantized
    average_bits: float


@torch.no_grad()
def measure_sensitivity(model: nn.Module, layers: dict[str, nn.Linear], ids: torch.Tensor,
                        schemes: dict[int, Scheme]) -> dict[str, dict[int, float]]:
    """KL of the model with one layer fake-quantized at each bit width, everything else float."""
    ref_logp = F.log_softmax(model(ids).float(), -1)
    result: dict[str, dict[int, float]] = {}
    for name, layer in layers.items():
        original = layer.weight.data.clone()
        result[name] = {}
        for bits, scheme in schemes.items():
            qt: QTensor = quantize_tensor(original, scheme)
            layer.weight.data.copy_(qt.dequantize().to(original.dtype))
            result[name][bits] = _kl(model, ids, ref_logp)
        layer.weight.data.copy_(original)
    return result


def allocate(sizes: dict[str, tuple[int, int]], sensitivity: dict[str, dict[int, float]],
             schemes: dict[int, Scheme], budget_bits: float) -> tuple[dict[str, int], float]:
    """Greedy bit allocation → ({layer: bits}, average stored bits). Budget below the smallest width is an error."""
    widths = sorted(schemes)
    cost = {name: {b: stored_bits(schemes[b], shape) * shape[0] * shape[1] for b in widths} for name, shape in sizes.items()}
    total_weights = sum(s[0] * s[1] for s in sizes.values())
    bits = {name: widths[0] for name in sizes}
    used = sum(cost[n][widths[0]] for n in sizes)
    if used > budget_bits * total_weights + 1e-6:
        raise V2MError(f"--budget-bits {budget_bits} is below the smallest scheme ({used / total_weights:.2f} stored bits per weight "
                       f"at {widths[0]} bits with this group size)", f"pass --budget-bits ≥ {used / total_weights:.2f}")
    while True:
        best, best_gain = None, 0.0
        for name in sizes:
            i = widths.index(bits[name])
            if i + 1 == len(widths):
                continue
            nxt = widths[i + 1]
            extra = cost[name][nxt] - cost[name][bits[name]]
            if used + extra > budget_bits * total_weights + 1e-6:
                continue
            gain = (sensitivity[name][bits[name]] - sensitivity[name][nxt]) / extra
            if best is None or gain > best_gain:
                best, best_gain = name, gain
        if best is None:
            break
        nxt = widths[widths.index(bits[best]) + 1]
        used += cost[best][nxt] - cost[best][bits[best]]
        bits[best] = nxt
    return bits, used / total_weights


def candidate_schemes(top: Scheme, group: int | None, asym: bool) -> dict[int, Scheme]:
    """The widths a layer may get under --scheme `top`: `top` itself (w8a8 included, per channel) and every
    narrower weight-only integer width of CANDIDATE_BITS, grouped by `group` (their default when None)."""
    if top.kind != "int":
        raise V2MError(f"--method mixed assigns integer widths per layer, not {top.name}",
                       "use it with an integer scheme (w8a8, w8, w4, w3); see v2m quantize --list")
    schemes = {b: make_scheme(f"w{b}", group, asym) for b in CANDIDATE_BITS if b < top.bits}
    if not schemes:
        raise V2MError(f"--method mixed needs a scheme wider than the narrowest width ({min(CANDIDATE_BITS)} bits), "
                       f"not {top.name}", "use --scheme w3 or wider; see v2m quantize --list")
    return {**schemes, top.bits: top}


def mixed_precision(model: nn.Module, layers: dict[str, nn.Linear], ids: torch.Tensor, budget_bits: float,
                    schemes: dict[int, Scheme]) -> Allocation:
    """Measure sensitivities on `ids` [n, T] and allocate the candidate `schemes` (bits → scheme, see
    `candidate_schemes`) under `budget_bits`."""
    # layers × widths forward passes: a slice of the calibration data ranks the layers well enough
    sensitivity = measure_sensitivity(model, layers, ids[:SENSITIVITY_WINDOWS, :SENSITIVITY_TOKENS], schemes)
    sizes = {name: (layer.out_features, layer.in_features) for name, layer in layers.items()}
    bits, average = allocate(sizes, sensitivity, schemes, budget_bits)
    return Allocation({name: schemes[b] for name, b in bits.items()}, sensitivity, average)
