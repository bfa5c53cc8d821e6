"""Diffusion-aware post-training quantization: calibration along the sampling trajectory, activation ranges per
group of timesteps, the time-embedding path kept apart.

A language model's activations have one distribution; a diffusion denoiser's change with the timestep, so a
calibration taken at one step fits that step and breaks the others. The remedies, brought to any denoiser whose
forward takes the timestep t ∈ [0, 1] as its second positional argument (v2m's DiT, models/diffusion.py):

- **Trajectory calibration** (PTQ4DM, Shang et al. 2023; Q-Diffusion, Li et al. 2023): the caller runs its own
  sampler on calibration conditions (`sample()`), and each Linear's inputs are recorded at a set of sampler steps
  drawn uniformly over the trajectory plus steps drawn from a normal distribution (PTQ4DM's normally distributed
  time-step calibration, centred late in the trajectory where the output is decided), not at one step.
- **Timestep-aware activation ranges** (TFMQ-DM, Huang et al. 2024; ViDiT-Q, Zhao et al. 2024): static
  asymmetric activation ranges per group of timesteps (`groups` equal slices of t); at run time a forward
  pre-hook on the model reads t and every TimestepQuantLinear uses its group's range.
- **Distribution-aware clipping** (PD-Quant, Liu et al. 2023): each layer's range per group is the absolute range
  times the clip ratio from a grid that minimises the layer's output error ||Q(X)Wᵀ − XWᵀ||² on the recorded rows.
- **Concatenated inputs split** (Q-Diffusion's split quantization): a layer whose input is a concatenation of
  differently ranged tensors (the model's `concat_inputs()`: the DiT's `inp` takes the noisy roll, the known roll
  and mask, the previous clean estimate) becomes one Linear per segment with the outputs summed
  (quant/linear.py ColumnSplitLinear), so each segment gets its own ranges; the checkpoint records the widths
  (`splits`) and loading rebuilds the parts.
- **The time-embedding path apart** (TFMQ-DM): the timestep MLP and the adaLN modulation layers (`time.*`,
  `*.ada`) get int8 weights with float activations (their inputs are one row per sample: no speed to win, and an
  error there shifts every token of every block), never the low-bit scheme.
- **The output layer apart**: the final projection to the prediction (`out`) also keeps float activations with
  int8 weights. Its input, the adaLN-modulated last norm, has channel outliers (static ranges about [-13, 34] in
  every timestep group on the shipped model), and its 8-bit activations were 93 % of the W8A8 model's v error
  (0.0274 → 0.0019 with them float; per-token dynamic ones 0.0169; 4 videos, BENCHMARKS.md issue 21) for under
  2 % of the multiply-adds.

Schemes: w8a8 (int8 weights per channel, int8 activations: the CPU int8 kernels run the product), w6a6 (weights
on a 6-bit grid stored in the int8 container, 6-bit activations: the same kernels), w4a8 (packed 4-bit weights,
8-bit activations, reference kernel). Activations are `static` (ranges per timestep group) or `dynamic` (per-token
absmax at run time). `ranges`: `single` (the naive baseline: one mid-trajectory step, absolute ranges, every
layer at the scheme, concatenations whole), `trajectory` (uniform + normal steps, one absolute range, time path
and output layer apart, concatenations split) or `timestep` (per-group ranges with the clip search, time path and
output layer apart, concatenations split).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from v2m import log
from v2m.errors import V2MError

from .formats import Params, make_scheme, quantize_tensor
from .gptq import GPTQConfig, gptq_quantize
from .linear import QuantLinear, replace_module, split_columns
from .mixed import allocate
from .qalora import QALoRAConfig, qalora_finetune, record_calls, relative_error

DIFFUSION_SCHEMES = {"w8a8": (8, 8), "w6a6": (6, 6), "w4a8": (4, 8)}  # name → (weight bits, activation bits)
RANGES = ("single", "trajectory", "timestep")
ACTS = ("static", "dynamic")
CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4)
ROWS_PER_GROUP = 512  # recorded input rows kept per layer and timestep group (for the clip search)
W4_GROUP = 64


@dataclass(frozen=True)
class DiffusionQuantConfig:
    scheme: str = "w8a8"
    method: str = "rtn"        # weights: rtn, gptq, or qalora (fine-tuned low-rank adapters merged, then rtn)
    ranges: str = "timestep"   # single | trajectory | timestep
    act: str = "static"        # static (per timestep group) | dynamic (per token)
    groups: int = 4            # timestep groups (ranges = timestep)
    sampler_steps: int = 20    # DDIM steps of the calibration runs
    uniform: int = 6           # steps recorded uniformly over the trajectory
    normal: int = 6            # steps recorded from the normal distribution (PTQ4DM)
    time_path: str = "auto"    # auto (apart unless ranges = single) | apart (int8 weights, float activations) | scheme
    concat: str = "auto"       # auto (split unless ranges = single) | split (a range per segment) | whole
    output: str = "auto"       # the output layer: auto (apart unless ranges = single) | apart | scheme
    qalora_steps: int = 150    # --method qalora: optimizer steps of the fine-tune (quant/qalora.py)
    qalora_rank: int = 8
    qalora_lr: float = 1e-5    # Adam's rate: 1e-3 raised the shipped (self-conditioned) model's error, 1e-5 lowers it
    mixed: bool = False        # w4a8: the most sensitive layers at w8a8 under `budget_bits` (measured v error)
    budget_bits: float = 5.0   # mixed: average stored bits per weight of the layers it allocates
    seed: int = 0

    def chosen(self, value: str, on: str) -> bool:
        """Whether a per-part option (time_path, output, concat) is `on`: set so, or `auto` with trajectory or
        timestep ranges (the naive `single` baseline treats every part alike)."""
        return value == on or (value == "auto" and self.ranges != "single")

    def check(self) -> None:
        if self.scheme not in DIFFUSION_SCHEMES:
            raise V2MError(f"scheme '{self.scheme}' is not one of the diffusion schemes",
                           f"a diffusion checkpoint takes {', '.join(DIFFUSION_SCHEMES)}")
        if self.method not in ("rtn", "gptq", "qalora"):
            raise V2MError(f"--method {self.method}: a diffusion checkpoint takes rtn, gptq or qalora weights")
        if self.method == "qalora" and not 1e-8 <= self.qalora_lr <= 0.1:
            raise V2MError(f"--qalora-lr {self.qalora_lr}: expected 1e-8..0.1 (e.g. 1e-5)")
        if self.method == "qalora" and not (1 <= self.qalora_steps <= 100000 and 1 <= self.qalora_rank <= 256):
            raise V2MError(f"--qalora-steps {self.qalora_steps} / --qalora-rank {self.qalora_rank}: expected "
                           "1..100000 steps and rank 1..256")
        if self.method == "gptq" and self.scheme == "w6a6":
            raise V2MError("--method gptq has no 6-bit weight format here", "use --method rtn with w6a6")
        if self.ranges not in RANGES:
            raise V2MError(f"--ranges {self.ranges}: expected one of {', '.join(RANGES)}")
        if self.act not in ACTS:
            raise V2MError(f"--act {self.act}: expected static or dynamic")
        if not 1 <= self.groups <= 50:
            raise V2MError(f"--t-groups must be 1..50, got {self.groups}")
        if self.time_path not in ("auto", "apart", "scheme"):
            raise V2MError(f"--time-path {self.time_path}: expected auto, apart or scheme")
        if self.output not in ("auto", "apart", "scheme"):
            raise V2MError(f"--output-layer {self.output}: expected auto, apart or scheme")
        if self.concat not in ("auto", "split", "whole"):
            raise V2MError(f"--concat {self.concat}: expected auto, split or whole")
        if self.mixed and (self.scheme != "w4a8" or self.method == "qalora"):
            raise V2MError(f"--method mixed with {self.scheme}/{self.method}: a diffusion model mixes w4a8 and w8a8 "
                           "layers, with rtn or gptq weights", "use --scheme w4a8 --method mixed+rtn or mixed+gptq")
        if not 2 <= self.sampler_steps <= 1000:
            raise V2MError(f"--calib-steps must be 2..1000, got {self.sampler_steps}")


def time_path(name: str) -> bool:
    """The timestep-embedding MLP and the adaLN modulation layers (TFMQ-DM's temporal features)."""
    return name.startswith("time.") or name == "ada" or name.endswith(".ada")


def targets(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear of the denoiser, the attention projections included (models/diffusion.py SelfAttention)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def group_of(t: float, groups: int) -> int:
    """Timestep group of t ∈ [0, 1]: equal slices, group 0 the noisiest (t near 1)."""
    return min(groups - 1, max(0, int((1.0 - float(t)) * groups)))


def calibration_steps(config: DiffusionQuantConfig) -> list[int]:
    """Sampler step indices whose inputs are recorded (0 = the first, noisiest step)."""
    s = config.sampler_steps
    if config.ranges == "single":
        return [s // 2]
    uniform = {int(round(i * (s - 1) / max(1, config.uniform - 1))) for i in range(config.uniform)}
    g = torch.Generator().manual_seed(config.seed)
    # PTQ4DM's NDTC: steps from N(μ, σ) with μ late in the trajectory (t ≈ 0.4), σ a quarter of it
    drawn = torch.randn(config.normal, generator=g) * 0.25 * s + 0.6 * s
    normal = {int(min(s - 1, max(0, round(float(v))))) for v in drawn}
    return sorted(uniform | normal)


class _Record:
    def __init__(self, in_features: int, groups: int, hessian: bool):
        self.lo = torch.full((groups,), math.inf)
        self.hi = torch.full((groups,), -math.inf)
        self.rows: list[list[torch.Tensor]] = [[] for _ in range(groups)]
        self.kept = [0] * groups
        self.xtx = torch.zeros(in_features, in_features, dtype=torch.float64) if hessian else None
        self.n = 0


@torch.no_grad()
def collect_trajectory(model: nn.Module, layers: dict[str, nn.Module], sample, config: DiffusionQuantConfig,
                       hessian: bool = False) -> tuple[dict[str, _Record], list[int]]:
    """Run `sample()` (the caller's sampler over its calibration conditions, `config.sampler_steps` steps) and
    record each layer's inputs at the calibration steps, by timestep group. Returns (records, steps seen)."""
    groups = config.groups if config.ranges == "timestep" else 1
    wanted = set(calibration_steps(config))
    records = {n: _Record(m.in_features, groups, hessian) for n, m in layers.items()}
    state = {"on": False, "group": 0}
    seen: list[int] = []
    g = torch.Generator().manual_seed(config.seed + 1)

    def on_model(_m, args):
        t = float(args[1].reshape(-1)[0])
        step = int(round((1.0 - t) * config.sampler_steps))
        state["on"] = step in wanted
        state["group"] = group_of(t, groups)
        if state["on"]:
            seen.append(step)

    def on_layer(name):
        def hook(_m, args):
            if not state["on"]:
                return
            r, k = records[name], state["group"]
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float().cpu()
            r.lo[k] = min(r.lo[k], float(x.min()))
            r.hi[k] = max(r.hi[k], float(x.max()))
            if r.xtx is not None:
                r.xtx += (x.T @ x).double()
                r.n += x.shape[0]
            room = ROWS_PER_GROUP - r.kept[k]
            if room > 0:
                pick = x[torch.randperm(x.shape[0], generator=g)[:min(room, 256)]]
                r.rows[k].append(pick)
                r.kept[k] += pick.shape[0]
        return hook

    handles = [model.register_forward_pre_hook(on_model)]
    handles += [m.register_forward_pre_hook(on_layer(n)) for n, m in layers.items()]
    try:
        sample()
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise V2MError("the calibration sampler never reached a recorded step", "check --calib-steps")
    return records, sorted(set(seen))


# ---------------------------------------------------------------- activation quantization

def static_grid(lo: float, hi: float, bits: int) -> tuple[float, int, int]:
    """(scale, zero point, levels) of the asymmetric grid of 2^bits levels spanning [lo, hi]."""
    levels = 2 ** bits - 1
    scale = max(hi - lo, 1e-8) / levels
    return scale, round(-lo / scale), levels


def fake_quant_static(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    """Asymmetric static quantization of x onto 2^bits levels spanning [lo, hi] (clipped outside)."""
    return fake_quant_grid(x, *static_grid(lo, hi, bits))


def fake_quant_grid(x: torch.Tensor, scale: float, zero: int, levels: int) -> torch.Tensor:
    q = torch.clamp(torch.round(x / scale) + zero, 0, levels)
    return (q - zero) * scale


def fake_quant_dynamic(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-token (per-row) quantization at `bits` bits."""
    qmax = 2 ** (bits - 1) - 1
    scale = (x.abs().amax(-1, keepdim=True) / qmax).clamp(min=1e-8)
    return torch.round(x / scale).clamp(-qmax, qmax) * scale


def clip_search(rows: torch.Tensor, weight: torch.Tensor, lo: float, hi: float, bits: int) -> tuple[float, float, float]:
    """PD-Quant-style distribution-aware range: the clip ratio of CLIP_GRID whose quantized inputs give the least
    output error ||Q(X)Wᵀ − XWᵀ||² on the recorded rows. Returns (lo, hi, ratio)."""
    reference = rows @ weight.T
    best = (math.inf, lo, hi, 1.0)
    for r in CLIP_GRID:
        err = float(((fake_quant_static(rows, lo * r, hi * r, bits) @ weight.T - reference) ** 2).mean())
        if err < best[0]:
            best = (err, lo * r, hi * r, r)
    return best[1], best[2], best[3]


LOWBIT_MAX_ROWS = 16  # calls of this many rows or more leave cpu-lowbit for the dequantized float weights
KERNEL_THREADS = 1  # threads cpu-vnni splits a layer's rows over (see TimestepQuantLinear._fused)


class TimestepQuantLinear(QuantLinear):
    """A QuantLinear whose input is quantized first: statically with the range of the current timestep group
    (`act_range` [groups, 2]: lo, hi; the group is set by the model's pre-hook, see `attach`) or dynamically per
    token (no `act_range`). The weight product then runs on the layer's kernel (for w8a8/w6a6 the CPU int8 ones,
    whose own per-token int8 step sees inputs already on the static grid)."""

    def __init__(self, in_features, out_features, scheme, bias, act_bits: int, groups: int | None):
        super().__init__(in_features, out_features, scheme, bias)
        self.act_bits = act_bits
        self.activation: str | None = None  # "gelu_tanh": the GELU after this layer fused into it (fuse_activations)
        self.group = 0
        self._grid, self._grid_of = None, None  # (scale, zero, levels) per group, made from act_range on first use
        self.register_buffer("act_range", torch.zeros(groups, 2) if groups else None)

    @property
    def per_step(self) -> bool:
        """Computes differently at different timesteps (ranges of several groups, chosen by the model's hook)."""
        act_range = self._buffers["act_range"]
        return act_range is not None and act_range.shape[0] > 1

    def set_kernel(self, name: str, many: tuple[str, int] | None = None) -> None:
        # cpu-lowbit is a matrix-vector product (decode); a denoiser's call is a whole window of rows, where the
        # weights dequantized once and torch's float matmul are several times faster (bench/diffusion_ptq.py w4a8)
        if name == "cpu-lowbit" and many is None:
            many = ("reference", LOWBIT_MAX_ROWS)
        super().set_kernel(name, many)

    def grid(self) -> tuple[float, int, int]:
        """(scale, zero, levels) of the current timestep group, as Python numbers: made from `act_range` once (on
        a GPU reading the buffer every call would be a device sync per layer and step)."""
        act_range = self._buffers["act_range"]
        if self._grid is None or self._grid_of != (id(act_range), act_range._version):  # loaded or moved since
            self._grid = [static_grid(float(lo), float(hi), self.act_bits) for lo, hi in act_range.tolist()]
            self._grid_of = (id(act_range), act_range._version)
        return self._grid[self.group]

    def forward(self, x):
        if self.kernel_name == "cpu-vnni" and x.device.type == "cpu" and self._buffers["smooth"] is None:
            return self._fused(x)
        if self._buffers["act_range"] is not None:
            x = fake_quant_grid(x, *self.grid())
        else:
            x = fake_quant_dynamic(x, self.act_bits)
        return self._activate(super().forward(x))

    def _activate(self, y):
        return F.gelu(y, approximate="tanh") if self.activation == "gelu_tanh" else y

    def _fused(self, x):
        """cpu-vnni: the kernel quantizes the input itself — with the group's static (scale, zero point) straight
        to unsigned bytes, or per token at 8 bits (what fake_quant_dynamic does) — so no float fake-quantization
        pass runs before the integer product (rows split over KERNEL_THREADS threads)."""
        if self._kernel is None:
            self.set_kernel(self.kernel_name, self.many)
        if self._buffers["act_range"] is not None:
            scale, zero, levels = self.grid()
        elif self.act_bits == 8:
            scale, zero, levels = 1.0, 0, 0
        else:  # fewer bits per token: the float pass, then the kernel's own (lossless on that grid) int8 step
            return self._activate(super().forward(fake_quant_dynamic(x, self.act_bits)))
        rows = x.reshape(-1, x.shape[-1])
        # one thread by default: a thread started per call waits for a core on a busy machine — on the shared
        # 2-core box a 2-thread split made a guided step 3× slower under load while torch's own pool kept its pace
        y = self._state.static(rows, scale, zero, levels, KERNEL_THREADS, self.activation)
        return (y if y.dtype == x.dtype else y.to(x.dtype)).reshape(*x.shape[:-1], -1)

    def extra_repr(self) -> str:
        mode = f"static ×{self.act_range.shape[0]} t-groups" if self.act_range is not None else "dynamic"
        return super().extra_repr() + f", a{self.act_bits} {mode}" + (f", + {self.activation}" if self.activation else "")


def fuse_activations(model: nn.Module) -> int:
    """Fold each tanh-GELU that directly follows a TimestepQuantLinear in an nn.Sequential (the DiT's MLP) into that
    layer (its `activation`; the GELU becomes nn.Identity): on cpu-vnni the kernel applies it to its outputs before
    storing them — no pass of its own over the 768-wide hidden rows (torch's GELU took 2.5 ms of a 16 ms W8A8 step
    on the dev box) — and every other kernel applies F.gelu after its product, so the arithmetic is the model's
    on every kernel. No parameters move: the state dict is unchanged. Returns the number of GELUs folded."""
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            layer, act = seq._modules[a], seq._modules[b]
            if isinstance(layer, TimestepQuantLinear) and layer.activation is None and isinstance(act, nn.GELU) \
                    and act.approximate == "tanh":
                layer.activation = "gelu_tanh"
                seq._modules[b] = nn.Identity()
                folded += 1
    return folded


def _timestep_hook(model: nn.Module, groups: int):
    layers = [m for m in model.modules() if isinstance(m, TimestepQuantLinear)]

    def hook(_m, args):
        k = group_of(float(args[1].reshape(-1)[0]), groups)
        for layer in layers:
            layer.group = k
    return model.register_forward_pre_hook(hook)


def attach(model: nn.Module, quant: dict) -> None:
    """Loading: turn the layers with recorded activation quantization into TimestepQuantLinear (before the state
    dict is loaded into them) and install the pre-hook that selects each step's timestep group."""
    acts = quant.get("activations") or {}
    for name, a in acts.items():
        old = model.get_submodule(name)
        new = TimestepQuantLinear(old.in_features, old.out_features, old.scheme, old._buffers["bias"] is not None,
                                  int(a["bits"]), int(a["groups"]) if a["mode"] == "static" else None)
        replace_module(model, name, new)
    if acts:
        fuse_activations(model)
        _timestep_hook(model, int(quant["diffusion"]["groups"]))


# ---------------------------------------------------------------- the whole model

def _weight_qtensor(weight: torch.Tensor, bits: int, hess: torch.Tensor | None, method: str):
    """The layer's weight codes at `bits`. 4-bit weights are grouped by W4_GROUP; a layer whose input width the
    group does not divide (the roll input `inp`, 1297 wide, or its split segments, 432 and 433; the feature input
    `feat.0`) keeps 8-bit per-channel weights instead of per-channel 4-bit ones, which measured as the largest
    single error of a w4a8 model (its mixed-precision sensitivity ranked them first) for 2 % of the weights — as
    Q-Diffusion keeps the input layer at 8 bits."""
    w = weight.detach().float()
    if bits == 4 and w.shape[1] % W4_GROUP:
        bits = 8
    if bits == 4:
        scheme = make_scheme("w4", W4_GROUP)
    else:
        scheme = make_scheme("w8a8")
    if method == "gptq" and hess is not None:
        return gptq_quantize(w, hess, scheme, GPTQConfig()).qtensor
    if bits == 6:  # a 6-bit grid in the int8 container: codes within ±31, the int8 kernels run it
        scale = (w.abs().amax(1) / 31).clamp(min=1e-8).half().float()
        return quantize_tensor(torch.round(w / scale[:, None]).clamp(-31, 31) * scale[:, None], scheme,
                               Params(scale[:, None], torch.full_like(scale[:, None], 128.0)))
    return quantize_tensor(w, scheme)


def _group_range(r: _Record, k: int) -> tuple[float, float]:
    """A layer's recorded (lo, hi) in timestep group k; a group no recorded step fell in takes the nearest one's."""
    if not math.isfinite(float(r.lo[k])):
        k = min((j for j in range(len(r.lo)) if math.isfinite(float(r.lo[j]))), key=lambda j: abs(j - k))
    return float(r.lo[k]), float(r.hi[k])


def output_layer(name: str) -> bool:
    """The denoiser's final projection to its prediction."""
    return name == "out"


def _apart(model: nn.Module, config: DiffusionQuantConfig) -> tuple[dict, set]:
    """(every target Linear, the names kept apart: int8 weights, float activations — the time path and the output
    layer, unless the config puts them at the scheme)."""
    layers = targets(model)
    time, output = config.chosen(config.time_path, "apart"), config.chosen(config.output, "apart")
    return layers, {n for n in layers if (time and time_path(n)) or (output and output_layer(n))}


def concat_splits(model: nn.Module, config: DiffusionQuantConfig) -> dict[str, list[int]]:
    """The concatenated inputs to quantize per segment ({layer: widths}): what the model declares
    (`concat_inputs()`), unless `concat` is whole (or auto with the naive single-step ranges)."""
    declared = getattr(model, "concat_inputs", None)
    if declared is None or not config.chosen(config.concat, "split"):
        return {}
    return {n: list(w) for n, w in declared().items()}


def finetune_qalora(model: nn.Module, config: DiffusionQuantConfig, sample) -> dict:
    """EfficientDM-style quantization-aware LoRA (quant/qalora.py) on the float `model`, adapters merged into its
    weights: it then takes RTN weights and the usual calibration. The student trains through the RTN weight grid
    of the scheme and the static per-group input ranges recorded along the float trajectory (or per-token
    inputs with --act dynamic). Returns the record for the checkpoint."""
    wbits, abits = DIFFUSION_SCHEMES[config.scheme]
    layers, apart = _apart(model, config)
    main = {n: m for n, m in layers.items() if n not in apart}
    groups = config.groups if config.ranges == "timestep" else 1
    calls = record_calls(model, sample)
    records, _ = collect_trajectory(model, main, sample, config)
    grids = {n: [static_grid(*_group_range(records[n], k), abits) for k in range(groups)] for n in main}

    def quantize_input(name, x, k):
        return fake_quant_grid(x, *grids[name][k]) if config.act == "static" else fake_quant_dynamic(x, abits)

    def quantize_weight(name, w):
        return _weight_qtensor(w, wbits, None, "rtn").dequantize().to(w.dtype)

    return qalora_finetune(model, main, calls, quantize_weight, quantize_input, lambda t: group_of(t, groups),
                           QALoRAConfig(rank=config.qalora_rank, steps=config.qalora_steps, lr=config.qalora_lr,
                                        seed=config.seed))


SENSITIVITY_CALLS, SENSITIVITY_ROWS = 4, 2  # recorded model calls (spread over the trajectory) and rows of each


@torch.no_grad()
def v_sensitivity(model: nn.Module, layers: dict[str, nn.Linear], calls, widths=(4, 8)) -> dict[str, dict[int, float]]:
    """ViDiT-Q-style measured sensitivity: the relative output error ||v_q − v_f||² / ||v_f||² when only one
    layer's weight is on the RTN grid of each width, everything else float, on recorded calls of the float
    model's trajectory (SENSITIVITY_CALLS of them, spread over the steps)."""
    picks = [calls[i] for i in torch.linspace(0, len(calls) - 1, min(SENSITIVITY_CALLS, len(calls))).round().long().tolist()]
    picks = [(tuple(a[:SENSITIVITY_ROWS] for a in args), {k: v[:SENSITIVITY_ROWS] for k, v in kwargs.items()},
              out[:SENSITIVITY_ROWS]) for args, kwargs, out in picks]
    result: dict[str, dict[int, float]] = {}
    for name, layer in layers.items():
        original = layer.weight.data.clone()
        result[name] = {}
        for bits in widths:
            layer.weight.data.copy_(_weight_qtensor(original, bits, None, "rtn").dequantize().to(original.dtype))
            errs = [float(relative_error(model(*args, **kwargs), out)) for args, kwargs, out in picks]
            result[name][bits] = sum(errs) / len(errs)
        layer.weight.data.copy_(original)
    return result


def mixed_bits(model: nn.Module, main: dict[str, nn.Linear], sample, budget_bits: float) -> tuple[dict[str, int], dict]:
    """Per-layer weight bits (4 or 8) of a w4a8 model: measured sensitivities (`v_sensitivity`) allocated under
    `budget_bits` by the transformer path's greedy allocator (quant/mixed.py `allocate`: most error saved per
    extra stored bit first). Layers whose width the 4-bit groups do not divide are 8-bit anyway (`_weight_qtensor`)
    and left out of the allocation and its average."""
    grouped = {n: m for n, m in main.items() if m.in_features % W4_GROUP == 0}
    sensitivity = v_sensitivity(model, grouped, record_calls(model, sample))
    schemes = {4: make_scheme("w4", W4_GROUP), 8: make_scheme("w8a8")}
    bits, average = allocate({n: (m.out_features, m.in_features) for n, m in grouped.items()}, sensitivity, schemes,
                             budget_bits)
    at8 = sorted(n for n, b in bits.items() if b == 8)
    log.info(f"mixed precision: {len(at8)} of {len(grouped)} layers at w8a8, {average:.3f} stored bits/weight "
             f"(budget {budget_bits}): {', '.join(at8)}")
    return bits, {"budget_bits": budget_bits, "average_bits": round(average, 4), "w8a8_layers": at8,
                  "sensitivity_v_err": {n: {str(b): round(v, 6) for b, v in s.items()} for n, s in sensitivity.items()}}


def quantize_diffusion(model: nn.Module, config: DiffusionQuantConfig, sample, calibration: dict) -> dict:
    """Quantize the denoiser `model` in place; `sample()` runs the caller's sampler over the calibration conditions
    (described by `calibration`). Returns the checkpoint's `quant` metadata."""
    config.check()
    model.eval()
    asked = config
    splits = concat_splits(model, config)
    split_columns(model, splits)  # before everything else: each segment is then a Linear with its own input
    qalora = None
    if config.method == "qalora":
        if sample is None:
            raise V2MError("--method qalora fine-tunes on the float model's sampling trajectories",
                           "pass --calib CONTROLS (a v2m.controls file or folder)")
        qalora = finetune_qalora(model, config, sample)
        config = replace(config, method="rtn")  # the merged weights take the grid the adapters trained through
    wbits, abits = DIFFUSION_SCHEMES[config.scheme]
    layers, apart = _apart(model, config)
    main = {n: m for n, m in layers.items() if n not in apart}
    groups = config.groups if config.ranges == "timestep" else 1
    bits, mixed = {}, None
    if config.mixed:
        if sample is None:
            raise V2MError("--method mixed measures each layer's sensitivity on the sampling trajectory",
                           "pass --calib CONTROLS (a v2m.controls file or folder)")
        bits, mixed = mixed_bits(model, main, sample, config.budget_bits)
    if sample is None:  # dynamic activations with RTN weights need no calibration
        if config.act == "static" or config.method == "gptq":
            raise V2MError(f"{config.method} weights with {config.act} activations need calibration conditions")
        records, seen = {n: _Record(m.in_features, groups, False) for n, m in layers.items()}, []
    else:
        records, seen = collect_trajectory(model, layers, sample, config, hessian=config.method == "gptq")
    log.info(f"calibration: {len(seen)} sampler steps of {config.sampler_steps} recorded ({seen}), "
             f"{groups} timestep group(s), {len(main)} layers at {config.scheme}, {len(apart)} apart at w8 (time path, output)")
    acts, clips = {}, {}
    for name, layer in layers.items():
        r = records[name]
        bias = None if layer.bias is None else layer.bias.detach()
        if name in apart:  # TFMQ-DM (and the output layer): int8 weights, float activations
            q = QuantLinear.from_qtensor(quantize_tensor(layer.weight.detach().float(), make_scheme("w8")), bias)
            replace_module(model, name, q)
            continue
        hess = (2.0 * r.xtx / max(r.n, 1)).float() if r.xtx is not None else None
        qt = _weight_qtensor(layer.weight, bits.get(name, wbits), hess, config.method)
        static = config.act == "static"
        new = TimestepQuantLinear(layer.in_features, layer.out_features, qt.scheme, bias is not None, abits,
                                  groups if static else None)
        new.packed.copy_(qt.packed)
        new.scale.copy_(qt.scale)
        if qt.zero is not None:
            new.zero.copy_(qt.zero)
        if bias is not None:
            new.bias.copy_(bias.float())
        if static:
            for k in range(groups):
                lo, hi = _group_range(r, k)
                if config.ranges == "timestep" and r.rows[k]:
                    lo, hi, ratio = clip_search(torch.cat(r.rows[k]), qt.dequantize().float(), lo, hi, abits)
                    clips.setdefault(name, []).append(ratio)
                new.act_range[k] = torch.tensor([lo, hi])
        replace_module(model, name, new.to(layer.weight.device))
        acts[name] = {"bits": abits, "mode": config.act, "groups": groups}
    fuse_activations(model)
    _timestep_hook(model, groups)
    return {
        "version": 1,
        "scheme": config.scheme,
        "method": ("qalora+" if qalora else "") + ("mixed+" if mixed else "") + f"{config.method}+{config.ranges}"
                  + ("" if config.act == "static" else "+dynamic"),
        "hyperparameters": asdict(asked),
        **({"qalora": qalora} if qalora else {}),
        **({"mixed": mixed} if mixed else {}),
        **({"splits": splits} if splits else {}),
        "calibration": {**calibration, "steps_recorded": seen},
        "diffusion": {"weight_bits": wbits, "act_bits": abits, "ranges": config.ranges, "act": config.act,
                      "groups": groups, "time_path": sorted(n for n in apart if time_path(n)),
                      "output": sorted(n for n in apart if output_layer(n)),
                      "clip_ratios": {n: v for n, v in clips.items()}},
        "layers": {n: m.scheme.to_json() for n, m in model.named_modules() if isinstance(m, QuantLinear)},
        "activations": acts,
    }
