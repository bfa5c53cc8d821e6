"""Model backends (transformer first), the static KV cache and fast decode path, sampling, training.

Importing this package does not import torch: `load_model`/`save_model`/`LoadedModel` are
resolved on first use, so CLI modules can import it at the top and `v2m --help` stays fast.
"""

from .registry import BACKENDS

_LAZY = {"load_model": "checkpoint", "save_model": "checkpoint", "LoadedModel": "checkpoint",
         "read_meta": "checkpoint", "sample_next": "sampling", "generate": "sampling",
         "Decoder": "cache", "decoder_for": "cache", "ModelConfig": "config", "load_model_preset": "config"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKENDS", *_LAZY]
