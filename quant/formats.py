"""Number formats: schemes, group parameters, quantize/dequantize and bit packing.

A *scheme* says how one Linear layer's weight (and optionally its input activations)
is stored: integer codes of 2..8 bits with a scale (and a zero point when asymmetric)
per output channel or per group of `group` input columns; FP8 E4M3 codes with a scale;
FP4 E2M1 codes with a scale (LLM-FP4 style); or NVFP4 — E2M1 codes in 16-element
blocks whose scales are themselves FP8 E4M3, times one fp32 scale per tensor.

Codes are stored unsigned and packed along the input dimension of each row
(two 4-bit codes per byte, four 2-bit codes per byte, eight 3-bit codes in 3 bytes),
so a row of K weights at b bits takes ceil(K*b/8) bytes.
Dequantization is always `(code - zero) * scale` for integers and
`value(code) * scale` for floating-point codes.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from v2m.errors import V2MError

FP8_MAX = 448.0  # largest finite float8 E4M3 (e4m3fn) value
FP4_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # the 8 magnitudes of E2M1
FP4_MAX = 6.0
NVFP4_BLOCK = 16


@dataclasses.dataclass(frozen=True)
class Scheme:
    """How one layer is quantized.

    kind: "int", "fp8", "fp4" or "nvfp4"; bits: bits per weight code; group: input columns
    sharing one scale (0 = one scale per output channel); symmetric: no zero point;
    act: activation quantization at run time ("none", "int8" per-token dynamic, "fp8" per-token dynamic);
    float_zero: the zero point is a float16 (any real offset, decoupleQ's float zero) instead of an integer code
    (integer asymmetric schemes only; the grid then need not contain 0).
    """

    name: str
    kind: str
    bits: int
    group: int = 0
    symmetric: bool = True
    act: str = "none"
    float_zero: bool = False

    def label(self) -> str:
        """Short human label, e.g. "w4 g128 asym" or "w8a8"."""
        parts = [self.name]
        if self.kind != "nvfp4":
            parts.append(f"g{self.group}" if self.group else "per-channel")
        if self.kind == "int" and not self.symmetric:
            parts.append("float-zero" if self.float_zero else "asym")
        return " ".join(parts)

    def to_json(self) -> dict:
        obj = dataclasses.asdict(self)
        if not self.float_zero:  # absent = integer zero: checkpoints of the other schemes keep their bytes
            del obj["float_zero"]
        return obj

    @staticmethod
    def from_json(obj: dict) -> "Scheme":
        return Scheme(**obj)


# name → (kind, bits, default group, activation quantization)
SCHEMES: dict[str, tuple[str, int, int, str]] = {
    "w8a8": ("int", 8, 0, "int8"),
    "w8": ("int", 8, 0, "none"),
    "w4": ("int", 4, 128, "none"),
    "w3": ("int", 3, 128, "none"),
    "w2": ("int", 2, 128, "none"),
    "fp8": ("fp8", 8, 0, "fp8"),
    "fp4": ("fp4", 4, 32, "none"),
    "nvfp4": ("nvfp4", 4, NVFP4_BLOCK, "none"),
}


def make_scheme(name: str, group: int | None = None, asym: bool = False) -> Scheme:
    """Resolve a scheme name and the --group/--asym options into a Scheme (errors are one line)."""
    if name not in SCHEMES:
        raise V2MError(f"unknown scheme '{name}'", f"available: {', '.join(SCHEMES)}")
    kind, bits, default_group, act = SCHEMES[name]
    group = default_group if group is None else group
    if group < 0:
        raise V2MError(f"--group must be 0 (per channel) or a positive group size, got {group}")
    if kind == "nvfp4" and group != NVFP4_BLOCK:
        raise V2MError(f"nvfp4 uses fixed {NVFP4_BLOCK}-element blocks; --group {group} does not apply", "leave --group out")
    if asym and kind != "int":
        raise V2MError(f"--asym applies to integer schemes only, not {name}")
    if act != "none" and group != 0:
        raise V2MError(f"{name} quantizes activations per token and weights per output channel; --group {group} does not apply",
                       "leave --group out (or pass --group 0)")
    return Scheme(name=name, kind=kind, bits=bits, group=group, symmetric=not asym, act=act)


def check_fits(scheme: Scheme, in_features: int, layer: str) -> None:
    """A group size must divide the layer's input width: one clear line naming the layer."""
    if scheme.group and in_features % scheme.group:
        raise V2MError(f"group size {scheme.group} does not divide layer {layer} (in_features {in_features})",
                       f"pick a --group that divides {in_features}, e.g. {_divisor_hint(in_features)}, or 0 for per-channel")


def _divisor_hint(n: int) -> int:
    for g in (128, 64, 32, 16, 8):
        if n % g == 0:
            return g
    return n


# ---------------------------------------------------------------- group parameters

@dataclasses.dataclass
class Params:
    """Per-group quantization parameters, shaped like the weight's leading dims ([N] or [N, G]).

    scale: float32 (already rounded to its storage precision); zero: float32 integer-valued or None;
    global_scale: the per-tensor fp32 scale of NVFP4 (folded into `scale`, kept to store it).
    """

    scale: torch.Tensor
    zero: torch.Tensor | None = None
    global_scale: torch.Tensor | None = None


def tensor_global_scale(weight: torch.Tensor, scheme: Scheme) -> torch.Tensor | None:
    """NVFP4's per-tensor fp32 scale: maps the tensor's absmax onto FP4_MAX * FP8_MAX."""
    if scheme.kind != "nvfp4":
        return None
    amax = weight.abs().amax().float().clamp(min=1e-12)
    return amax / (FP4_MAX * FP8_MAX)


def half_up(x: torch.Tensor) -> torch.Tensor:
    """`x` rounded *up* to a float16 value (as float32): a stored scale rounded down would shrink the grid below
    the group's range, so its extreme weights would clip by up to (levels x 2^-11) of a step, past half a step."""
    h = x.half()
    h = torch.where(h.float() < x, torch.nextafter(h, torch.full_like(h, float("inf"))), h)
    return h.float()


def group_params(w: torch.Tensor, scheme: Scheme, global_scale: torch.Tensor | None = None) -> Params:
    """Scale (and zero) for each group along the LAST dim of `w` (shape [..., g]) → Params of shape [...]."""
    w = w.float()
    if scheme.kind == "int":
        maxq = 2 ** scheme.bits - 1
        if scheme.symmetric:
            half = 2 ** (scheme.bits - 1)
            amax = w.abs().amax(-1).clamp(min=1e-8)
            scale = half_up(amax / (half - 1 if half > 1 else 1)).clamp(min=1e-7)
            return Params(scale, torch.full_like(scale, float(half)))
        # GPTQ's asymmetric grid always contains zero, so exact zeros stay exact
        lo = w.amin(-1).clamp(max=0)
        hi = w.amax(-1).clamp(min=0)
        scale = half_up(((hi - lo) / maxq).clamp(min=1e-8)).clamp(min=1e-7)
        zero = torch.round(-lo / scale).clamp(0, maxq)
        return Params(scale, zero)
    amax = w.abs().amax(-1)
    if scheme.kind == "fp8":
        return Params((amax / FP8_MAX).clamp(min=1e-12))
    if scheme.kind == "fp4":
        return Params(half_up((amax / FP4_MAX).clamp(min=1e-8)).clamp(min=1e-7))
    if scheme.kind == "nvfp4":
        assert global_scale is not None
        block = (amax / FP4_MAX / global_scale).clamp(max=FP8_MAX).to(torch.float8_e4m3fn).float()
        # a block whose scale underflows to 0 dequantizes to 0, which is what its (tiny) weights round to anyway
        return Params(block * global_scale, global_scale=global_scale)
    raise ValueError(scheme.kind)


# ---------------------------------------------------------------- codes

_FP4_VALUES = torch.tensor(FP4_GRID)
_FP4_MIDPOINTS = (_FP4_VALUES[1:] + _FP4_VALUES[:-1]) / 2


def encode(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, scheme: Scheme) -> torch.Tensor:
    """Codes (uint8, unpacked) of `w` given params broadcastable to it."""
    w = w.float()
    if scheme.kind == "int":
        maxq = 2 ** scheme.bits - 1
        if scheme.float_zero:  # a fractional zero shifts the grid: round after adding it
            return torch.clamp(torch.round(w / scale + zero), 0, maxq).to(torch.uint8)
        return torch.clamp(torch.round(w / scale) + zero, 0, maxq).to(torch.uint8)
    if scheme.kind == "fp8":
        v = (w / scale).clamp(-FP8_MAX, FP8_MAX)
        return v.to(torch.float8_e4m3fn).view(torch.uint8)
    # fp4 / nvfp4: nearest E2M1 magnitude, sign in bit 3
    v = torch.where(scale > 0, w / scale.clamp(min=1e-30), torch.zeros_like(w))
    magnitude = torch.bucketize(v.abs().clamp(max=FP4_MAX), _FP4_MIDPOINTS.to(w.device))
    return (magnitude | ((v < 0).to(torch.int64) << 3)).to(torch.uint8)


def decode(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, scheme: Scheme) -> torch.Tensor:
    """Float32 values of unpacked codes."""
    if scheme.kind == "int":
        return (codes.float() - zero) * scale
    if scheme.kind == "fp8":
        return codes.view(torch.float8_e4m3fn).float() * scale
    c = codes.to(torch.int64)
    magnitude = _FP4_VALUES.to(codes.device)[c & 7]
    return torch.where((c & 8) > 0, -magnitude, magnitude) * scale


def fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, scheme: Scheme) -> torch.Tensor:
    """Quantize-dequantize (what GPTQ measures its error against)."""
    return decode(encode(w, scale, zero, scheme), scale, zero, scheme)


# ---------------------------------------------------------------- packing

def packed_width(k: int, bits: int) -> int:
    """Bytes per row of `k` codes at `bits` bits (rows padded to whole packing units)."""
    per_unit, unit_bytes = _unit(bits)
    return math.ceil(k / per_unit) * unit_bytes


def _unit(bits: int) -> tuple[int, int]:
    """(codes per packing unit, bytes per unit)."""
    if bits == 8:
        return 1, 1
    if bits in (4, 2):
        return 8 // bits, 1
    if bits == 3:
        return 8, 3
    raise ValueError(f"cannot pack {bits}-bit codes")


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes [N, K] (each < 2**bits) into uint8 [N, packed_width(K, bits)], low bits first."""
    n, k = codes.shape
    per_unit, unit_bytes = _unit(bits)
    if bits == 8:
        return codes.contiguous()
    pad = (-k) % per_unit
    c = torch.nn.functional.pad(codes, (0, pad)).to(torch.int32).reshape(n, -1, per_unit)
    shifts = torch.arange(per_unit, dtype=torch.int32, device=codes.device) * bits
    word = (c << shifts).sum(-1)  # [N, units], at most 24 bits
    out = torch.stack([(word >> (8 * b)) & 0xFF for b in range(unit_bytes)], -1)
    return out.reshape(n, -1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of `pack`: uint8 [N, K] codes."""
    n = packed.shape[0]
    per_unit, unit_bytes = _unit(bits)
    if bits == 8:
        return packed[:, :k]
    b = packed.to(torch.int32).reshape(n, -1, unit_bytes)
    word = sum(b[..., i] << (8 * i) for i in range(unit_bytes))
    shifts = torch.arange(per_unit, dtype=torch.int32, device=packed.device) * bits
    codes = (word.unsqueeze(-1) >> shifts) & (2 ** bits - 1)
    return codes.reshape(n, -1)[:, :k].to(torch.uint8)


# ---------------------------------------------------------------- whole tensors

@dataclasses.dataclass
class QTensor:
    """A packed quantized weight [out_features, in_features].

    packed: uint8 [N, packed_width(K)]; scale: [N, G] (float16, or E4M3 bits as uint8 for nvfp4, float32 for fp8);
    zero: uint8 [N, G] (float16 for a float-zero scheme) or None (symmetric); global_scale: fp32 scalar (nvfp4) or None.
    """

    packed: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    global_scale: torch.Tensor | None
    shape: tuple[int, int]
    scheme: Scheme

    def groups(self) -> int:
        return 1 if not self.scheme.group else self.shape[1] // self.scheme.group

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scale, self.zero, self.global_scale) if t is not None)

    def float_scale(self) -> torch.Tensor:
        """Scales as float32 [N, G], NVFP4's per-tensor scale folded in."""
        if self.scheme.kind == "nvfp4":
            return self.scale.view(torch.float8_e4m3fn).float() * self.global_scale
        return self.scale.float()

    def dequantize(self) -> torch.Tensor:
        """Float32 weight [N, K]."""
        n, k = self.shape
        g = self.scheme.group or k
        codes = unpack(self.packed, self.scheme.bits, k).reshape(n, k // g, g)
        zero = None if self.zero is None else self.zero.float().unsqueeze(-1)
        if self.scheme.kind == "int" and zero is None:
            zero = torch.tensor(float(2 ** (self.scheme.bits - 1)), device=codes.device)
        return decode(codes, self.float_scale().unsqueeze(-1), zero, self.scheme).reshape(n, k)


def params_for(weight: torch.Tensor, scheme: Scheme) -> Params:
    """Group params of a whole weight [N, K] (shape [N, G])."""
    n, k = weight.shape
    g = scheme.group or k
    gs = tensor_global_scale(weight, scheme)
    return group_params(weight.reshape(n, k // g, g), scheme, gs)


def quantize_tensor(weight: torch.Tensor, scheme: Scheme, params: Params | None = None) -> QTensor:
    """Encode and pack `weight` [N, K] with `params` (round-to-nearest params when None).

    GPTQ passes the params it chose group by group and a weight already on the grid, so encoding is exact.
    """
    n, k = weight.shape
    g = scheme.group or k
    params = params_for(weight, scheme) if params is None else params
    zero = params.zero
    codes = encode(weight.reshape(n, k // g, g), params.scale.unsqueeze(-1),
                   None if zero is None else zero.unsqueeze(-1), scheme).reshape(n, k)
    if scheme.kind == "nvfp4":
        stored_scale = (params.scale / params.global_scale).to(torch.float8_e4m3fn).view(torch.uint8)
    elif scheme.kind == "fp8":
        stored_scale = params.scale.float()
    else:
        stored_scale = params.scale.half()
    stored_zero = None
    if scheme.kind == "int" and not scheme.symmetric:
        stored_zero = zero.half() if scheme.float_zero else zero.to(torch.uint8)
    gs = None if params.global_scale is None else params.global_scale.reshape(()).float()
    return QTensor(pack(codes, scheme.bits), stored_scale, stored_zero, gs, (n, k), scheme)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is closer)."""
    noise = (reference.float() - approx.float()).pow(2).sum().clamp(min=1e-30)
    return float(10 * torch.log10(reference.detach().float().pow(2).sum() / noise.detach()))
