"""The static KV cache: keys and values of every layer, preallocated to `max_len` and written in place.

Why static: a cache grown by concatenation allocates and copies every token, and its changing shapes defeat
graph capture. Why an nn.Module of buffers: under CUDA graphs, buffers of a captured module are static and
may be written, where mutated *inputs* would make the capture be skipped (engines/decoder.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class KVCache(nn.Module):
    """Keys and values of every layer: k, v [layers, batch, heads, max_len, head_dim], written in place."""

    def __init__(self, n_layers: int, batch: int, n_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        super().__init__()
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.batch, self.max_len = batch, max_len

    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()
