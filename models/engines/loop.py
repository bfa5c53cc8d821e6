"""The generation loop over a Decoder (prefill once, then one cached step per token), and its oracle.

`generate` is the plain loop (tests, benchmarks, anything that continues a prompt); the generate stage has
its own bar-by-bar loop over the same Decoder, with controls forced and a sliding window.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..sampling import sample_next
from .decoder import DecoderPool, decoder_for

StepHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def generate(model: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
             eos_id: int | None = None, max_len: int | None = None, compile: bool = False,
             on_step: StepHook | None = None, decoders: DecoderPool | None = None) -> torch.Tensor:
    """Continue `prompt` [B, T] by up to `max_new_tokens` → ids [B, T + n] (prompt included).

    Prefill once, then one cached step per token. `on_step(pos, ids_so_far, next_ids)` may return
    replacement ids (e.g. to force control tokens after a Bar); stops early when every row has
    produced `eos_id` (rows that finished are padded with eos_id). The sequence must fit
    `max_len` (default: the model's); longer generation is the caller's sliding window.
    """
    batch, length = prompt.shape
    total = length + max_new_tokens
    limit = max_len or model.config.max_len
    if total > limit:
        raise ValueError(f"prompt {length} + {max_new_tokens} new tokens exceed max_len {limit}")
    decoder = decoder_for(model, batch, limit, compile, pool=decoders)
    out = torch.empty(batch, total, dtype=torch.long, device=prompt.device)
    out[:, :length] = prompt
    logits = decoder.prefill(prompt)
    done = torch.zeros(batch, dtype=torch.bool, device=prompt.device)
    pos = length
    while pos < total:
        nxt = sample_next(logits, temperature, top_k, top_p, generator)
        if on_step is not None:
            nxt = on_step(pos, out[:, :pos], nxt)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            done |= nxt == eos_id
        out[:, pos] = nxt
        pos += 1
        # one host sync per token only when an eos can end the loop early
        if pos == total or (eos_id is not None and bool(done.all())):
            break
        logits = decoder.step(nxt, pos - 1)
    return out[:, :pos]


@torch.no_grad()
def reference_greedy(model: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """The oracle for the fast path: a full causal forward over the whole sequence for every token."""
    ids = prompt
    for _ in range(max_new_tokens):
        nxt = model(ids)[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids
