"""How the CPU decode steps call things without overhead: modules without nn.Module.__call__, one intra-op thread.

Shared by the lean PyTorch step (engines/lean.py) and the C step (engines/native.py).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..transformer import RMSNorm

# Intra-op threads for a decode step. One token's matrix products are tens of microseconds each: split
# over threads they gain little, and when another process holds a core the second thread's share waits
# for it (2-core machine at load 8: fp32 step 3.5 → 10.5 ms, W8A8 0.8 → 3.2 ms with 2 threads). Prefill
# keeps torch's own setting. V2M_DECODE_THREADS overrides (e.g. 2 on an idle multi-core machine).
DECODE_THREADS = max(1, int(os.environ.get("V2M_DECODE_THREADS", "1") or 1))


def with_decode_threads(fn, *args, **kwargs):
    """fn(*args, **kwargs) with DECODE_THREADS intra-op threads (torch's setting restored after; ~1 µs)."""
    threads = torch.get_num_threads()
    if threads == DECODE_THREADS:
        return fn(*args, **kwargs)
    torch.set_num_threads(DECODE_THREADS)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def linear_call(module: nn.Module):
    """A callable x → module(x) without nn.Module.__call__: F.linear for a plain Linear, else its forward."""
    if type(module) is nn.Linear:  # parameters read per call: a model whose weights are reassigned stays in step
        return lambda x: F.linear(x, module.weight, module.bias)
    return module.forward


def norm_call(module: nn.Module):
    """A callable x → norm(x): the fused F.rms_norm for the transformer's RMSNorm in fp32, else its forward."""
    if type(module) is RMSNorm and module.weight.dtype == torch.float32:
        shape, eps = (module.weight.shape[0],), module.eps
        # RMSNorm.forward computes in fp32 and multiplies by the weight after; F.rms_norm does the same
        return lambda x: F.rms_norm(x, shape, module.weight, eps) if x.dtype == torch.float32 else module.forward(x)
    if type(module) is nn.LayerNorm:
        return lambda x: F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
    return module.forward
