"""Where the Linear layers of a model sit, for the methods that fold scales across layers.

RTN, GPTQ and mixed precision only need the Linear layers (any nn.Module works); SmoothQuant's
folding and the residual-stream rotation need the transformer's wiring (models/transformer.py):
each block is `x + attn.out(attention(attn.qkv(norm1(x))))` then `x + mlp.down(act(mlp.up(norm2(x))))`,
with a tied embedding/output matrix after a final norm.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class BlockParts:
    norm1: nn.Module
    qkv: nn.Linear
    out: nn.Linear
    norm2: nn.Module
    up: nn.Linear
    down: nn.Linear
    swiglu: bool
    n_heads: int
    head_dim: int
    prefix: str


def is_transformer(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("blocks", "embed", "norm", "config")) and all(
        hasattr(b, "attn") and hasattr(b, "mlp") for b in model.blocks)


def blocks(model: nn.Module) -> list[BlockParts]:
    """The parts of each transformer block (empty for a model that is not a v2m transformer)."""
    if not is_transformer(model):
        return []
    cfg = model.config
    return [BlockParts(b.norm1, b.attn.qkv, b.attn.out, b.norm2, b.mlp.up, b.mlp.down, b.mlp.swiglu,
                       cfg.n_heads, cfg.head_dim, f"blocks.{i}") for i, b in enumerate(model.blocks)]


def target_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers to quantize: those inside the transformer blocks (the embedding/output matrix
    is tied and stays in floating point), or every nn.Linear of another model."""
    scope = "blocks." if is_transformer(model) else ""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.startswith(scope)}


def layer_groups(model: nn.Module, names: list[str]) -> list[list[str]]:
    """Layers grouped by transformer block, in forward order (GPTQ quantizes one block at a time,
    calibrating each on the outputs of the blocks already quantized); one group for other models."""
    parts = blocks(model)
    if not parts:
        return [names]
    return [[n for n in names if n.startswith(p.prefix + ".")] for p in parts]
