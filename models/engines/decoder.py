"""The Decoder: prefill a prompt, then decode one token at a time into a static KV cache, on the fastest
engine for the device (the four forms of the step: engines/README.md).

Why a static cache (models/kv_cache.py): a cache grown by concatenation allocates and copies every token,
and its changing shapes defeat graph capture. Here K/V live in buffers preallocated to `max_len` and written
in place (index_copy_), and attention is masked by position (models/transformer.py).

Why buffers of a module: under `torch.compile(mode="reduce-overhead")` (CUDA graphs) tensors that
are *inputs* of the compiled function and get mutated make the capture be skipped ("mutated
inputs"); buffers of the compiled module are static and may be written. So `Decoder` holds the
model and its cache as submodules and compiles its own `forward(ids, pos)` — the same Python code
as the eager path, only wrapped. Measured on an H100 (issue 10): 185 → 3,683 tokens/s at batch 1.

On CUDA the default fast engine goes one step further (engines/graph.py): an explicit CUDA graph of the
step *and* its sampling, replayed with one small copy in and one out per token. Callers that sample
(the generate stage) use `step_draw`, which returns host ids directly; `step` still returns logits.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn as nn

from v2m import log

from ..kv_cache import KVCache
from ..sampling import filter_scores, gumbel_argmax, sample_next
from .calls import with_decode_threads
from .graph import GraphStep
from .lean import LeanStep


class _Step(nn.Module):
    """model + cache as one module: the compiled graph sees the cache as its own (static) buffers."""

    def __init__(self, model: nn.Module, cache: KVCache):
        super().__init__()
        self.model, self.cache = model, cache

    def forward(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.model.forward_cached(ids, self.cache, pos)[:, -1]


class Decoder:
    """Prefill a prompt, then decode one token at a time into a static cache.

    `compile` picks the step's engine:
    - False: eager (the CPU default: measured fastest there, and the reference).
    - True: the fastest on the device — on CUDA an explicit CUDA graph of the whole step including sampling
      (engines/graph.py) with Inductor-fused kernels, weights and cache in `dtype` (default bf16); elsewhere
      Inductor's default mode.
    - "graph": the explicit CUDA graph over the eager step (no Inductor); "reduce-overhead": torch.compile's
      own CUDA graphs (the previous fast path, kept for the benchmark).
    Warm-up (compile, capture) happens on first use; reuse one Decoder per (model, batch, max_len) — a
    DecoderPool keeps them for whoever opened the model — so later generations only replay.
    """

    def __init__(self, model: nn.Module, batch: int, max_len: int | None = None, compile: bool | str = False,
                 dtype: torch.dtype | None = None):
        device = model.embed.weight.device if hasattr(model, "embed") else next(model.parameters()).device
        engine = _engine(compile, device)
        if engine in ("graph", "graph+inductor") and dtype is None:
            dtype = torch.bfloat16
        self.source, self.model = model, _cast(model, dtype)
        self.cache = self.model.new_cache(batch, max_len)
        self.batch, self.max_len = batch, self.cache.max_len
        self.device = self.cache.k.device
        self.step_module = _Step(self.model, self.cache)
        self.compiled, self.engine = engine != "eager", engine
        self._step, self.graph = None, None
        if engine in ("graph", "graph+inductor"):
            self.graph = GraphStep(self.step_module, batch, self.model.config.vocab_size, self.device,
                                   inductor=engine == "graph+inductor")
        elif engine != "eager":
            self._step = torch.compile(self.step_module, mode="reduce-overhead" if engine == "reduce-overhead"
                                       else None, dynamic=False)
        self._pos = torch.zeros((), dtype=torch.long, device=self.device)
        # CPU eager: the lean single-token step (engines/lean.py): the C step where it applies
        # (engines/native.py), else the same logits as forward_cached in fewer operator calls
        self._lean = None
        if engine == "eager" and self.device.type == "cpu" and hasattr(self.model, "rope_cos") \
                and self.cache.k.dtype == self.model.embed.weight.dtype:
            self._lean = LeanStep(self.model, self.cache)
        log.debug(f"decode: engine {self.describe()} (batch {batch}, {self.max_len} cache slots on {self.device})")

    def describe(self) -> str:
        """The form of the step that runs (engines/README.md): c-one-call, c-per-layer, lean, eager, graph,
        graph+inductor, inductor or reduce-overhead — recorded in artifacts, since their round-off differs."""
        if self._lean is None:
            return self.engine
        native = self._lean.native
        if native is None:
            return "lean"
        return "c-one-call" if native.plan is not None else "c-per-layer"

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] from position 0 → logits [B, V] of the last position (eager: variable length)."""
        if ids.shape[0] != self.batch:
            raise ValueError(f"decoder built for batch {self.batch}, got {ids.shape[0]}")
        if self._lean is not None and ids.device.type == "cpu":
            logits = self._lean.prefill(ids)  # a short prompt through the native one-call step
            if logits is not None:
                return logits
        return self.model.forward_cached(ids, self.cache, 0)[:, -1]

    @torch.no_grad()
    def step(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        """ids [B] or [B, 1] (tensor or list) at position `pos` → logits [B, V] for position pos + 1."""
        if pos >= self.max_len:
            raise ValueError(f"position {pos} is past the cache length {self.max_len}")
        if self.graph is not None:
            return self.graph.logits(ids, pos).clone()  # the graph's output buffer is reused by the next replay
        ids = torch.as_tensor(ids, device=self.device).reshape(self.batch, 1)
        if self._lean is not None:
            return self._lean(ids, pos)
        if self._step is None:
            return self.model.forward_cached(ids, self.cache, pos)[:, -1]
        self._pos.fill_(pos)
        # CUDA graph outputs are overwritten by the next replay: clone what the caller keeps
        return self._step(ids, self._pos).clone()

    @torch.no_grad()
    def draw(self, logits: torch.Tensor, sampling, banned: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> list[int]:
        """Sample ids [B] (a host list) from `logits` [B, V] (e.g. a prefill's), `banned` [V] (or [B, V], one per row) never drawn.

        `sampling` has temperature/top_k/top_p (GenerateConfig or sampling.Sampling). Eager engines use
        sample_next (torch.multinomial); the graph engine uses the Gumbel-max draw of its graph, from its
        noise buffer, so the draws after a prefill and after a step come from one stream per seed.
        """
        temperature, top_k, top_p = sampling.temperature, sampling.top_k, sampling.top_p
        if self.graph is None:
            masked = logits.float() if banned is None else logits.float().masked_fill(banned, float("-inf"))
            if self._lean is not None:  # the CPU decode loop: sampling's ~12 small ops on one thread too
                return with_decode_threads(sample_next, masked, temperature, top_k, top_p, generator).tolist()
            return sample_next(masked, temperature, top_k, top_p, generator).tolist()
        self.graph.set_sampling(banned, generator)
        if temperature <= 0:
            return sample_next(logits.float().masked_fill(self.graph.body.banned, float("-inf")), 0).tolist()
        scores = filter_scores(logits, temperature, top_k, top_p, self.graph.body.banned)
        return gumbel_argmax(scores, self.graph.next_uniform()).tolist()

    @torch.no_grad()
    def step_draw(self, ids, pos: int, sampling, banned: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> list[int]:
        """Feed ids [B] at `pos` and draw the next ids [B] (host list): `step` + `draw` in one call.

        On the graph engine this is one replay of step and sampling together and one read-back, the only
        host sync per token. Elsewhere exactly `draw(step(ids, pos), ...)`.
        """
        if self.graph is None:
            return self.draw(self.step(ids, pos), sampling, banned, generator)
        if pos >= self.max_len:
            raise ValueError(f"position {pos} is past the cache length {self.max_len}")
        if not self.graph.fallback or "sampling" not in self.graph.fallback:
            self.graph.set_sampling(banned, generator)
            try:
                return self.graph.draw(ids, pos, sampling.temperature, sampling.top_k, sampling.top_p)
            except RuntimeError as e:  # sampling would not capture: keep the graph for the model step only
                self.graph.fallback = f"sampling outside the graph ({type(e).__name__}: {str(e)[:80]})"
                log.warn(f"decode: {self.graph.fallback}")
        return self.draw(self.graph.logits(ids, pos), sampling, banned, generator)


def _engine(compile: bool | str, device: torch.device) -> str:
    if compile in (False, None, "eager"):
        return "eager"
    if compile is True:
        return "graph+inductor" if device.type == "cuda" else "inductor"
    if compile in ("graph", "graph+inductor", "reduce-overhead", "inductor"):
        if compile.startswith("graph") and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        return compile
    raise ValueError(f"unknown compile mode {compile!r}")


def _cast(model: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """The model in `dtype` for decoding: a copy when it differs (the caller's model stays as it was)."""
    weight = next(model.parameters(), None)
    if dtype is None or weight is None or weight.dtype == dtype or not weight.is_floating_point():
        return model
    return copy.deepcopy(model).to(dtype)


class DecoderPool:
    """Decoders kept for reuse, so compilation and graph capture happen once per (model, batch, cache length):
    a cache owned by whoever opened the model (a generate session, a `run` worker), not by this module.

    Stale cache contents need no clearing: prefill rewrites positions 0..T-1 and the position mask hides
    every slot past the current one. Beyond `limit` decoders the least recently used one is dropped, with
    its cache (e.g. small preset, batch 16, 1,024 tokens: 250 MB fp32) and its reference to the model.
    """

    def __init__(self, limit: int = 4):
        self.limit = limit
        self._decoders: OrderedDict[tuple, Decoder] = OrderedDict()
        self.last: Decoder | None = None  # the one handed out last (what a caller reports it ran on)

    def get(self, model: nn.Module, batch: int, max_len: int | None = None, compile: bool | str = False,
            dtype: torch.dtype | None = None) -> Decoder:
        key = (id(model), batch, max_len, compile, dtype)
        decoder = self._decoders.pop(key, None)
        if decoder is None or decoder.source is not model:
            decoder = Decoder(model, batch, max_len, compile, dtype)
        self._decoders[key] = decoder  # (re)inserted last: the first key is the least recently used
        while len(self._decoders) > self.limit:
            self._decoders.popitem(last=False)
        self.last = decoder
        return decoder

    def clear(self) -> None:
        """Drop every Decoder (frees their caches; the next generation compiles again)."""
        self._decoders.clear()
        self.last = None


def decoder_for(model: nn.Module, batch: int, max_len: int | None = None, compile: bool | str = False,
                dtype: torch.dtype | None = None, pool: DecoderPool | None = None) -> Decoder:
    """The pool's Decoder for these settings, or a new one when there is no pool."""
    if pool is None:
        return Decoder(model, batch, max_len, compile, dtype)
    return pool.get(model, batch, max_len, compile, dtype)
