"""Post-training quantization: number formats, methods (RTN, GPTQ, SmoothQuant, Hadamard rotation,
mixed precision), packed checkpoints and the kernels that run them.

Importing this package does not import torch; the entry points below resolve on first use
(`v2m.models.load_model` calls `load_quantized` for checkpoints with `quant` metadata).
"""

_LAZY = {"load_quantized": "checkpoint", "save_quantized": "checkpoint", "quantize_model": "pipeline",
         "QuantizeConfig": "pipeline", "load_calibration": "calibrate", "set_kernels": "linear", "QuantLinear": "linear"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def kernel_names() -> list[str]:
    """Names `--kernel` accepts (without importing torch)."""
    return ["auto", "reference", "cpu-int8", "int-mm", "inductor", "cuda-int-mm", "cuda-fp8", "cuda-int4"]


__all__ = [*_LAZY, "kernel_names"]
