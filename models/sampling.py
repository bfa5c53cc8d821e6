"""Sampling on the device, batched: temperature, top-k (Fan et al. 2018) and nucleus/top-p
(Holtzman et al. 2020), and the Gumbel-max draw the CUDA graph engine uses. The generation loop over the
decode engines is engines/loop.py.

Determinism: every random draw goes through the caller's `torch.Generator` (on the logits'
device), so the same seed gives the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn: temperature ≤ 0 is greedy; top_k 0 and top_p 1 disable those filters."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


def filter_scores(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  banned: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, V] → fp32 scores [B, V] (logits / temperature) with every token that may not be drawn at -inf.

    `banned` [V] (or [B, V]) bool masks tokens first (generate's free-token mask); then top-k, then top-p. Static shapes
    and no host sync, so the same function runs eagerly and inside a captured CUDA graph (engines/graph.py).
    temperature must be > 0 (greedy is decided by the caller).
    """
    scores = logits.float()
    if banned is not None:
        scores = scores.masked_fill(banned, float("-inf"))
    scores = scores / temperature
    if top_k and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass (the first always stays)
        drop = (torch.cumsum(probs, dim=-1) - probs) > top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    return scores


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: "torch.Generator | RowGenerators | None" = None) -> torch.Tensor:
    """logits [B, V] → next ids [B] (long, same device).

    temperature ≤ 0 is greedy (argmax); top_k = 0 and top_p = 1 disable those filters.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_scores(logits, temperature, top_k, top_p), dim=-1)
    if isinstance(generator, RowGenerators):
        return generator.multinomial(probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def gumbel_argmax(scores: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The Gumbel-max trick (Gumbel 1954; Maddison et al. 2014): argmax(scores + G), G = -log(-log(U)),
    U ~ uniform[0, 1) [B, V], is a draw from softmax(scores) — the same distribution as `sample_next`.

    Why: unlike torch.multinomial it is two elementwise kernels and an argmax over noise that can be drawn
    ahead of time, so sampling fits inside a CUDA graph with no host sync and no generator in the capture.
    """
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
    return (scores + gumbel).argmax(dim=-1)


class RowGenerators:
    """One torch.Generator per block of rows [start, stop) of a batch: pieces decoded together (several videos
    in one batch) each draw from their own seed's stream, so a piece's draws do not depend on its batch-mates."""

    def __init__(self, blocks: list[tuple[int, int, torch.Generator]]):
        self.blocks = blocks

    def multinomial(self, probs: torch.Tensor) -> torch.Tensor:
        """One draw per row of probs [B, V] → ids [B]; rows outside every block (padding) take id 0."""
        out = torch.zeros(probs.shape[0], dtype=torch.long, device=probs.device)
        for start, stop, generator in self.blocks:
            out[start:stop] = torch.multinomial(probs[start:stop], 1, generator=generator).squeeze(1)
        return out

    def uniform_(self, noise: torch.Tensor) -> torch.Tensor:
        """Fill noise [rows, B, V] in place: block b's rows from its generator, drawn as a contiguous
        [rows, stop - start, V] tensor (the same numbers as a batch of that block alone); padding rows get 0.5."""
        noise.fill_(0.5)
        for start, stop, generator in self.blocks:
            noise[:, start:stop].copy_(torch.rand(noise.shape[0], stop - start, noise.shape[2], generator=generator,
                                                  device=noise.device, dtype=noise.dtype))
        return noise
