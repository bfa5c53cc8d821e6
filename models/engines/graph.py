"""One decode step as an explicit CUDA graph: ids in → logits and a sampled id out, no host sync inside.

Why: at batch 1 a 6-layer, 320-wide model spends its time launching ~100 small kernels per token, not
computing. `torch.compile(mode="reduce-overhead")` removes the launches but keeps Python-side guards and
cudagraph-tree bookkeeping per call, and sampling (softmax, sort, multinomial) still ran outside as eager
kernels with a `.tolist()` per token. Here the whole step — embedding → layers over the static KV cache →
logits → banned-token mask, temperature, top-k/top-p → Gumbel-max draw — is captured once with
`torch.cuda.CUDAGraph` and replayed: one H2D copy of the fed ids and position (from a pinned buffer),
one replay, one D2H copy of the drawn ids.

Randomness inside the graph: uniform noise rows are drawn *outside* the graph from the caller's generator
into a static buffer [rows, B, V]; the graph reads row `t` (a device counter it advances itself). The host
knows t too, and refills the buffer when it runs out or when a new generator (a new seed) arrives, so a
seed still fixes every token.

The captured function is `StepBody.__call__`, plain Python over tensors: on CPU it runs eagerly (tests
compare it with the eager decode step), on CUDA it is what gets captured. Optionally its model part is
first compiled by Inductor (fused elementwise kernels, fewer launches per replay) and then captured.

Two more things cut the per-token cost (measured on an H100, bench/gpu_profile.py, default model, batch 1:
GPU 0.237 ms per replay, but 0.333 ms wall per token before them):
- the host ↔ device copies are *inside* the sampling graph: ids and position are written into a pinned
  buffer through a numpy view, the replay copies them in, samples, and copies the drawn ids out to pinned
  memory, so a token costs one `replay()` and one event wait on the host (no per-token tensor ops);
- attention spans only the cache slots in use, in two buckets: a graph over the first half of the cache
  while the position is in it, one over the whole cache after (0.214 vs 0.237 ms per replay at 1,024 slots).
  Each bucket is the same step over a view of the first `span` slots (`CacheView`), captured separately.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

from v2m import log
from v2m.config import user_cache_dir

from ..sampling import RowGenerators, filter_scores, gumbel_argmax

NOISE_ROWS = 256  # tokens of noise drawn per refill (B × V × 4 bytes each)


def sample_draw(logits: torch.Tensor, uniform: torch.Tensor, banned: torch.Tensor, temperature: float,
                top_k: int, top_p: float) -> torch.Tensor:
    """One on-device draw [B] from logits [B, V] with the noise row `uniform` [B, V] (filter, then Gumbel-max)."""
    return gumbel_argmax(filter_scores(logits, temperature, top_k, top_p, banned), uniform)


def inductor_cache() -> Path:
    """Where Inductor keeps compiled kernels across processes: v2m's user cache (~/.cache/v2m/inductor) unless
    TORCHINDUCTOR_CACHE_DIR says otherwise (its default, /tmp/torchinductor_USER, does not survive a reboot).
    With it warm, a new process's compile is mostly Dynamo's tracing (BENCHMARKS.md, issue 18)."""
    path = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(user_cache_dir() / "inductor")))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ready_marker(model: torch.nn.Module, batch: int) -> Path:
    """The file that says Inductor's cache holds this model's decode kernels at this batch (GPU, torch, CUDA)."""
    config = getattr(model, "config", None)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    key = f"{config!r}|{batch}|{torch.__version__}|{torch.version.cuda}|{device}"
    return inductor_cache() / f"v2m-ready-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def inductor_ready(model: torch.nn.Module, batch: int) -> bool:
    """Whether an earlier process compiled and captured this model's step with Inductor here (so a new compile is
    mostly cache hits: 6.5 s instead of 32.8 s of warm-up, BENCHMARKS.md issue 18)."""
    return _ready_marker(model, batch).exists()


class StepBody:
    """The graph's body over static buffers: `io` [B + 1] long holds the fed ids and then the position.

    `logits()` runs the model step → logits [B, V]; `draw(...)` also samples into `drawn` [B] and
    advances the noise counter `t`. Both are shape-static and sync-free, so they can be captured.
    """

    def __init__(self, step_module: torch.nn.Module, batch: int, vocab: int, device: torch.device,
                 rows: int = NOISE_ROWS, sample_fn=None):
        # `step_module(ids [B, 1], pos) -> logits [B, V]`; `logits`/`draw` may be given another one (a span bucket)
        self.step, self.batch = step_module, batch
        # `sample_fn(logits, uniform, banned, temperature, top_k, top_p) -> ids`; GraphStep passes an
        # Inductor-compiled `sample_draw` so the ~10 small sampling kernels fuse into a few per replay
        self.sample = sample_fn or sample_draw
        self.io = torch.zeros(batch + 1, dtype=torch.long, device=device)
        self.drawn = torch.zeros(batch, dtype=torch.long, device=device)
        self.banned = torch.zeros(batch, vocab, dtype=torch.bool, device=device)  # a [V] mask broadcasts to every row
        self.noise = torch.rand(rows, batch, vocab, device=device)
        self.t = torch.zeros((), dtype=torch.long, device=device)

    def logits(self, step=None) -> torch.Tensor:
        ids = self.io[: self.batch].view(self.batch, 1)
        return (self.step if step is None else step)(ids, self.io[self.batch])

    def draw(self, temperature: float, top_k: int, top_p: float, step=None) -> torch.Tensor:
        logits = self.logits(step)
        if temperature <= 0:  # greedy under the same mask
            self.drawn.copy_(logits.float().masked_fill(self.banned, float("-inf")).argmax(dim=-1))
        else:
            uniform = self.noise.index_select(0, self.t.view(1)).squeeze(0)
            self.drawn.copy_(self.sample(logits, uniform, self.banned, temperature, top_k, top_p))
        self.t.add_(1)
        return logits


class CacheView(torch.nn.Module):
    """The first `span` slots of a KVCache, as a cache of `span` slots: views (no copy) of its k and v."""

    def __init__(self, cache: torch.nn.Module, span: int):
        super().__init__()
        self.register_buffer("k", cache.k[:, :, :, :span], persistent=False)
        self.register_buffer("v", cache.v[:, :, :, :span], persistent=False)
        self.batch, self.max_len = cache.batch, span


def cache_spans(max_len: int) -> list[int]:
    """Attention spans captured for a cache of `max_len` slots: half and whole from 512 slots up (below
    that the saving is smaller than a second compile costs)."""
    return [max_len // 2, max_len] if max_len >= 512 else [max_len]


class GraphStep:
    """Captured decode steps for one Decoder (CUDA only): `logits(ids, pos)` and `draw(ids, pos, ...)`.

    Graphs are captured lazily, once per attention span bucket and sampling setting (temperature, top_k,
    top_p), and replayed for any position in the bucket: the position is data in `io`, and attention covers
    the bucket's slots with a position mask (Transformer.forward_cached with a tensor `pos`).
    """

    def __init__(self, step_module: torch.nn.Module, batch: int, vocab: int, device: torch.device,
                 inductor: bool = True):
        self.batch, self.device = batch, device
        self.inductor, self.fallback = inductor, None
        cache = step_module.cache  # engines/decoder.py `_Step`: the model and its static cache
        self.model = step_module.model
        self.spans = cache_spans(cache.max_len)
        # one step module per span bucket: the same model over a view of the first `span` cache slots
        self.eager_steps = {span: step_module if span == cache.max_len else type(step_module)(step_module.model,
                            CacheView(cache, span)) for span in self.spans}
        sample_fn = None
        self.steps = dict(self.eager_steps)
        if inductor:
            # Inductor without its own cudagraphs: fused kernels, then captured by us (one graph, no guards per call)
            from torch import _dynamo

            inductor_cache()

            limit = "recompile_limit" if hasattr(_dynamo.config, "recompile_limit") else "cache_size_limit"
            # each span bucket (and each batch size a process decodes) is one more compiled variant of `forward`
            setattr(_dynamo.config, limit, max(getattr(_dynamo.config, limit), 32))
            self.steps = {span: torch.compile(module, dynamic=False) for span, module in self.eager_steps.items()}
            sample_fn = torch.compile(sample_draw, dynamic=False)
        self.body = StepBody(self.steps[self.spans[-1]], batch, vocab, device, sample_fn=sample_fn)
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.host_in = torch.zeros(batch + 1, dtype=torch.long).pin_memory()
        self.host_out = torch.zeros(batch, dtype=torch.long).pin_memory()
        # numpy views of the pinned buffers: writing ids and reading draws costs no tensor op per token
        self.host_in_np, self.host_out_np = self.host_in.numpy(), self.host_out.numpy()
        self.copied = torch.cuda.Event()  # the last H2D copy out of host_in is done (host_in may be rewritten)
        self.copied.record()
        self.stream = torch.cuda.current_stream(device)  # where the replays run
        self.t_host, self.generator, self.banned_source = 0, None, None

    def span_for(self, pos: int) -> int:
        """The smallest captured attention span that holds position `pos`."""
        return next((span for span in self.spans if pos < span), self.spans[-1])

    # ------------------------------------------------------------ inputs and noise

    def feed(self, ids, pos: int) -> None:
        """Put the ids [B] (list or tensor) and the position into `io`: one copy, no sync."""
        if isinstance(ids, torch.Tensor) and ids.device.type == "cuda":
            self.body.io[: self.batch].copy_(ids.reshape(self.batch))
            self.body.io[self.batch].fill_(pos)
            return
        self.copied.synchronize()
        values = ids.reshape(-1).tolist() if isinstance(ids, torch.Tensor) else list(ids)
        self.host_in[: self.batch] = torch.tensor(values, dtype=torch.long)
        self.host_in[self.batch] = pos
        self.body.io.copy_(self.host_in, non_blocking=True)
        self.copied.record()

    def set_sampling(self, banned: torch.Tensor | None, generator: torch.Generator | None) -> None:
        """Sampling inputs that change per generation: the banned mask and the generator (fresh noise)."""
        if banned is not self.banned_source:  # when the mask changes (generate keeps one tensor per mask), not per token
            self.banned_source = banned
            if banned is None:
                self.body.banned.zero_()
            else:
                self.body.banned.copy_(banned.to(self.device))
        if generator is not self.generator:  # a new generator is a new seed: fresh noise from it
            self.generator = generator
            self._refill()

    def _refill(self) -> None:
        if isinstance(self.generator, RowGenerators):  # pieces of several videos: each block of rows its own stream
            self.generator.uniform_(self.body.noise)
        else:
            self.body.noise.uniform_(generator=self.generator)
        self.body.t.zero_()
        self.t_host = 0

    def next_uniform(self) -> torch.Tensor:
        """The noise row for an eager draw (after a prefill), advancing the counter like a replay does."""
        if self.t_host >= self.body.noise.shape[0]:
            self._refill()
        row = self.body.noise[self.t_host]
        self.body.t.add_(1)
        self.t_host += 1
        return row

    # ------------------------------------------------------------ capture and replay

    def _graph(self, key: tuple, fn):
        try:
            return self._capture(key, fn)
        except Exception as e:  # noqa: BLE001 — Inductor failing to compile or capture: the eager kernels still can
            if not self.inductor:
                raise
            self.fallback = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.warn(f"decode graph with Inductor kernels failed ({self.fallback}); capturing the eager step instead")
            self.inductor, self.body.sample, self.graphs = False, sample_draw, {}
            self.steps = dict(self.eager_steps)
            self.body.step = self.steps[self.spans[-1]]
            return self._capture(key, fn)

    def _capture(self, key: tuple, fn):
        if key not in self.graphs:
            started = time.perf_counter()
            t_before = self.body.t.clone()
            # the warm-up draws advance the noise counter; from row 0, so a capture late in a refill (a new span
            # bucket after a window slide, a new sampling setting) cannot index past the noise buffer
            self.body.t.zero_()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up (and Inductor's compile) off the capture; rewrites the same slot
                    fn()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = fn()
            self.body.t.copy_(t_before)
            self.graphs[key] = (graph, out)
            torch.cuda.synchronize()
            if self.inductor:
                _ready_marker(self.model, self.batch).touch()
            log.debug(f"decode: warm-up {time.perf_counter() - started:.2f} s — captured the {key[0]} graph for "
                      f"{key[1]} cache slots ({'Inductor' if self.inductor else 'eager'} kernels)")
        return self.graphs[key]

    def logits(self, ids, pos: int) -> torch.Tensor:
        """Feed ids at `pos`, replay → logits [B, V] (a static buffer: overwritten by the next replay)."""
        self.feed(ids, pos)
        span = self.span_for(pos)
        graph, out = self._graph(("logits", span), lambda: self.body.logits(self.steps[span]))
        graph.replay()
        return out

    def draw(self, ids, pos: int, temperature: float, top_k: int, top_p: float) -> list[int]:
        """Ids at `pos` → one replay of copy-in, step, sampling and copy-out → the drawn ids [B] (the one sync)."""
        if self.t_host >= self.body.noise.shape[0]:
            self._refill()
        values = ids.reshape(-1).tolist() if isinstance(ids, torch.Tensor) else ids
        self.copied.synchronize()  # a `logits` feed may still be copying out of host_in
        self.host_in_np[: self.batch] = values
        self.host_in_np[self.batch] = pos
        span = self.span_for(pos)
        key = ("draw", span, float(temperature), int(top_k), float(top_p))

        def run():
            self.body.io.copy_(self.host_in, non_blocking=True)
            self.body.draw(temperature, top_k, top_p, self.steps[span])
            self.host_out.copy_(self.body.drawn, non_blocking=True)

        graph, _ = self._graph(key, run)
        graph.replay()
        self.t_host += 1
        # the one sync per token: on the stream itself (Event.record() looks the current stream up in Python
        # each time, ~35 µs a token on the H200's host)
        self.stream.synchronize()
        return self.host_out_np.tolist()
