"""Post-training quantization: number formats, methods (RTN, GPTQ, SmoothQuant, Hadamard rotation,
mixed precision), packed checkpoints and the kernels that run them.

quant works on generic modules — it swaps nn.Linear layers for QuantLinear, the way torchao does — and
depends on core only. Importing this package does not import torch; it registers `load_quantized` as the
loader of checkpoints with `quant` metadata (v2m.checkpoint.LOADERS), which `v2m.models.load_model` consults,
and resolves the entry points below on first use.
"""

from v2m.checkpoint import LOADERS

LOADERS.register_lazy("quant", "v2m.quant.storage:load_quantized")

_LAZY = {"load_quantized": "storage", "save_quantized": "storage", "quantize_model": "pipeline",
         "QuantizeConfig": "pipeline", "set_kernels": "linear", "QuantLinear": "linear"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
