"""QuantLinear: an nn.Linear replacement holding packed codes, scales and zero points.

Its buffers are exactly what the checkpoint stores (so `state_dict()` is the packed model);
the kernel that runs it is chosen after loading and moving to a device (`set_kernels`),
since kernels prepack for a device (fbgemm, tinygemm).
"""

from __future__ import annotations

import torch
from torch import nn

from v2m import log
from v2m.errors import V2MError

from . import kernels as kernel_registry
from .formats import QTensor, Scheme, packed_width

NATIVE_KERNELS = ("cpu-vnni", "cpu-lowbit")  # kernels whose state has a `matrix` for the fused C step


def _scale_dtype(scheme: Scheme) -> torch.dtype:
    return {"nvfp4": torch.uint8, "fp8": torch.float32}.get(scheme.kind, torch.float16)


class QuantLinear(nn.Module):
    """y = x · dequant(W)^T + b, computed by a kernel from the registry.

    `smooth` (optional, [in_features]) divides the input first: SmoothQuant's per-channel
    migration for layers whose input is not produced by a norm it could be folded into.
    """

    def __init__(self, in_features: int, out_features: int, scheme: Scheme, bias: bool, smooth: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        groups = in_features // scheme.group if scheme.group else 1
        self.register_buffer("packed", torch.zeros(out_features, packed_width(in_features, scheme.bits), dtype=torch.uint8))
        self.register_buffer("scale", torch.zeros(out_features, groups, dtype=_scale_dtype(scheme)))
        self.register_buffer("zero", torch.zeros(out_features, groups, dtype=torch.float16 if scheme.float_zero else torch.uint8)
                             if scheme.kind == "int" and not scheme.symmetric else None)
        self.register_buffer("global_scale", torch.zeros(()) if scheme.kind == "nvfp4" else None)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("smooth", torch.ones(in_features) if smooth else None)
        self.kernel_name = "reference"
        self._kernel: kernel_registry.Kernel | None = None
        self._state = None
        # another kernel for calls of many rows (a batch, a prefill): (name, from how many rows), chosen by measuring
        # on a GPU where the fastest kernel at one row is not the fastest at many (kernels.measured_choice)
        self.many: tuple[str, int] | None = None
        self._many = None
        self.native = None  # the NativeMatrix native_matrix() handed out, while it is current (see there)

    @classmethod
    def from_qtensor(cls, qt: QTensor, bias: torch.Tensor | None, smooth: torch.Tensor | None = None) -> "QuantLinear":
        n, k = qt.shape
        layer = cls(k, n, qt.scheme, bias is not None, smooth is not None)
        layer.packed.copy_(qt.packed)
        layer.scale.copy_(qt.scale)
        if qt.zero is not None:
            layer.zero.copy_(qt.zero)
        if qt.global_scale is not None:
            layer.global_scale.copy_(qt.global_scale)
        if bias is not None:
            layer.bias.copy_(bias.detach().float())
        if smooth is not None:
            layer.smooth.copy_(smooth.detach().float())
        return layer

    def qtensor(self) -> QTensor:
        return QTensor(self.packed, self.scale, self.zero, self.global_scale, (self.out_features, self.in_features), self.scheme)

    def set_kernel(self, name: str, many: tuple[str, int] | None = None) -> None:
        """Prepare kernel `name` (already resolved, not "auto") for the layer's current device, and `many` = (kernel,
        rows) for calls of at least that many rows."""
        self._kernel = kernel_registry.KERNELS.get(name)()
        self.kernel_name = name
        self._state = self._kernel.prepare(self)
        self.many, self._many = many, None
        if many is not None:
            kernel = kernel_registry.KERNELS.get(many[0])()
            self._many = (kernel, kernel.prepare(self))
        self.native = None

    def kernel_label(self) -> str:
        """The kernel(s) this layer runs, as artifacts record them: "cuda-int4", or "cuda-int4 (< 16 rows),
        dequant-bf16" when calls of many rows take another."""
        if self.many is None:
            return self.kernel_name
        return f"{self.kernel_name} (< {self.many[1]} rows), {self.many[0]}"

    def native_matrix(self):
        """This layer as a fused C decode step can call it (a v2m.c_build.NativeMatrix), or None.

        The kernels with a C product such a step can take (it calls it through the matrix's function pointer:
        core/csrc/v2m_matrix.h) keep it as their state's `matrix`: cpu-vnni and cpu-lowbit. A layer that divides
        its input by `smooth` first does not fit a plain product. The same object comes back while the layer's
        kernel state lasts, and stays in the `native` attribute until that state changes, so a step can tell by
        identity when the layer changed."""
        if self.kernel_name not in NATIVE_KERNELS or self._buffers["smooth"] is not None:
            return None
        if self._state is None:
            self.set_kernel(self.kernel_name)
        # kept in `native` until the kernel state changes (set_kernel, a move): a step that holds the matrix checks
        # `layer.native is matrix` every token, a dict lookup where a method call would cost ~0.2 µs a layer
        self.native = self._state.matrix
        return self.native

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self._kernel
        if kernel is None:  # never prepared, or moved since: prepare the chosen kernel (again)
            self.set_kernel(self.kernel_name, self.many)
            kernel = self._kernel
        if self._buffers["smooth"] is not None:
            x = x / self._buffers["smooth"].to(x.dtype)
        if self._many is not None and x.numel() >= self.many[1] * x.shape[-1]:  # shapes only: static under capture
            return self._many[0].forward(self._many[1], x, self)
        return kernel.forward(self._state, x, self)

    def _apply(self, fn, recurse=True):
        # model.to(device) moves the packed buffers; model.to(bfloat16) must not recast fp16 scales
        # (lossy), so only the device part of `fn` applies here. The chosen kernel is prepacked again
        # on the next forward.
        self._kernel, self._state, self.native, self._many = None, None, None, None

        def move_only(t):
            return t.to(fn(t.new_empty(0)).device)

        return super()._apply(move_only, recurse)

    def extra_repr(self) -> str:
        return f"{self.in_features} → {self.out_features}, {self.scheme.label()}, kernel={self.kernel_label()}"


def quant_linears(model: nn.Module) -> dict[str, QuantLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def set_kernels(model: nn.Module, kernel: str = "auto", log_choice: bool = True) -> dict[str, str]:
    """Give every QuantLinear its kernel (`auto` picks per layer by capability); returns {layer: kernel}.

    A kernel named explicitly that cannot run some layer, or is not available here, is a V2MError.
    """
    chosen, reasons, many = {}, {}, {}
    for name, layer in quant_linears(model).items():
        device, shape = layer.packed.device, (layer.out_features, layer.in_features)
        chosen[name] = kernel_registry.resolve(kernel, layer.scheme, shape, device, name)
        if kernel == "auto" and device.type == "cuda":
            # on a GPU the capable kernels and the dequantized bf16 matmul race on this layer (kernels.measured_choice)
            capable = [k for k in kernel_registry.AUTO_PREFERENCES["cuda"]
                       if kernel_registry.passed_over(k, layer.scheme, shape, device) is None]
            few, many_rows = kernel_registry.MEASURE_ROWS
            chosen[name], times = kernel_registry.measured_choice(layer, capable + ["dequant-bf16"], rows=few)
            at_many, times_many = kernel_registry.measured_choice(layer, capable + ["dequant-bf16"], rows=many_rows)
            if at_many != chosen[name]:
                many[name] = (at_many, kernel_registry.MANY_ROWS)
            for rows, best, measured in ((few, chosen[name], times), (many_rows, at_many, times_many)):
                reasons.setdefault(f"kernel at {rows} row(s): {best} (" + ", ".join(
                    f"{k} {t * 1e6:.1f} µs" for k, t in measured.items()) + " per call in a CUDA graph)", name)
            continue
        if kernel == "auto":  # what auto passed over, and why (said once per reason at -v)
            for preferred in kernel_registry.AUTO_PREFERENCES["cpu" if device.type == "cpu" else "cuda"]:
                if preferred == chosen[name]:
                    break
                why = kernel_registry.passed_over(preferred, layer.scheme, shape, device)
                reasons.setdefault(f"kernel {preferred} not used: it {why}", name)
    for reason, first in reasons.items():
        log.debug(f"{reason} ({first} and others like it)")
    for name, layer in quant_linears(model).items():
        layer.set_kernel(chosen[name], many.get(name))
    if chosen and log_choice:
        labels = {name: layer.kernel_label() for name, layer in quant_linears(model).items()}
        kernel_registry.log_choice(labels, next(iter(quant_linears(model).values())).packed.device)
    return chosen


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap the submodule at dotted path `name`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class ColumnSplitLinear(nn.Module):
    """A Linear whose input is a concatenation, computed as one Linear per column segment (`widths`, in order) with
    the outputs summed; the bias rides on the first part. In float it is the Linear it was made from (up to the
    order of the sums); quantized, each part's input gets its own activation range — Q-Diffusion's split
    quantization of concatenated inputs (Li et al. 2023), whose segments have different ranges (a DiT's noisy roll
    beside the known roll and mask: one range over both spends the grid on the widest)."""

    def __init__(self, in_features: int, out_features: int, widths, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.widths = in_features, out_features, tuple(int(w) for w in widths)
        self.parts = nn.ModuleList(nn.Linear(w, out_features, bias=bias and i == 0) for i, w in enumerate(self.widths))

    @classmethod
    def from_linear(cls, linear: nn.Linear, widths) -> "ColumnSplitLinear":
        split = cls(linear.in_features, linear.out_features, widths, linear.bias is not None)
        start = 0
        with torch.no_grad():
            for part, w in zip(split.parts, split.widths):
                part.weight.copy_(linear.weight[:, start:start + w])
                start += w
            if linear.bias is not None:
                split.parts[0].bias.copy_(linear.bias)
        return split.to(linear.weight.device, linear.weight.dtype)

    def forward(self, x):
        y, start = None, 0
        for part, w in zip(self.parts, self.widths):
            z = part(x[..., start:start + w])
            y = z if y is None else y + z
            start += w
        return y

    def extra_repr(self) -> str:
        return f"{self.in_features} → {self.out_features}, columns split {list(self.widths)}"


def split_columns(model: nn.Module, splits: dict) -> None:
    """Replace each nn.Linear named in `splits` ({name: segment widths}, e.g. a checkpoint's `quant.splits`) by a
    ColumnSplitLinear of those widths; anything but a mapping, or widths that do not cover the layer's input
    exactly, is a V2MError."""
    if not isinstance(splits, dict):
        raise V2MError("the column splits are not a mapping of layer → widths")
    for name, widths in splits.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            linear = None
        ok = isinstance(widths, (list, tuple)) and widths and all(isinstance(w, int) and w > 0 for w in widths)
        if not isinstance(linear, nn.Linear) or not ok or sum(widths) != linear.in_features:
            raise V2MError(f"column split {name} {widths!r} does not fit a Linear layer of this model")
        replace_module(model, name, ColumnSplitLinear.from_linear(linear, widths))
