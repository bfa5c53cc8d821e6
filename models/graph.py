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
"""

from __future__ import annotations

import torch

from .sampling import filter_scores, gumbel_argmax

NOISE_ROWS = 256  # tokens of noise drawn per refill (B × V × 4 bytes each)


def sample_draw(logits: torch.Tensor, uniform: torch.Tensor, banned: torch.Tensor, temperature: float,
                top_k: int, top_p: float) -> torch.Tensor:
    """One on-device draw [B] from logits [B, V] with the noise row `uniform` [B, V] (filter, then Gumbel-max)."""
    return gumbel_argmax(filter_scores(logits, temperature, top_k, top_p, banned), uniform)


class StepBody:
    """The graph's body over static buffers: `io` [B + 1] long holds the fed ids and then the position.

    `logits()` runs the model step → logits [B, V]; `draw(...)` also samples into `drawn` [B] and
    advances the noise counter `t`. Both are shape-static and sync-free, so they can be captured.
    """

    def __init__(self, step_module: torch.nn.Module, batch: int, vocab: int, device: torch.device,
                 rows: int = NOISE_ROWS, sample_fn=None):
        self.step, self.batch = step_module, batch
        # `sample_fn(logits, uniform, banned, temperature, top_k, top_p) -> ids`; GraphStep passes an
        # Inductor-compiled `sample_draw` so the ~10 small sampling kernels fuse into a few per replay
        self.sample = sample_fn or sample_draw
        self.io = torch.zeros(batch + 1, dtype=torch.long, device=device)
        self.drawn = torch.zeros(batch, dtype=torch.long, device=device)
        self.banned = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.noise = torch.rand(rows, batch, vocab, device=device)
        self.t = torch.zeros((), dtype=torch.long, device=device)

    def logits(self) -> torch.Tensor:
        ids = self.io[: self.batch].view(self.batch, 1)
        return self.step(ids, self.io[self.batch])

    def draw(self, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
        logits = self.logits()
        if temperature <= 0:  # greedy under the same mask
            self.drawn.copy_(logits.float().masked_fill(self.banned, float("-inf")).argmax(dim=-1))
        else:
            uniform = self.noise.index_select(0, self.t.view(1)).squeeze(0)
            self.drawn.copy_(self.sample(logits, uniform, self.banned, temperature, top_k, top_p))
        self.t.add_(1)
        return logits


class GraphStep:
    """Captured decode steps for one Decoder (CUDA only): `logits(ids, pos)` and `draw(ids, pos, ...)`.

    Graphs are captured lazily, once per sampling setting (temperature, top_k, top_p), and replayed for
    any position: the position is data in `io`, and attention covers all cache slots with a position
    mask (Transformer.forward_cached with a tensor `pos`).
    """

    def __init__(self, step_module: torch.nn.Module, batch: int, vocab: int, device: torch.device,
                 inductor: bool = True):
        self.batch, self.device = batch, device
        self.inductor, self.eager_step, self.fallback = inductor, step_module, None
        model_step, sample_fn = step_module, None
        if inductor:
            # Inductor without its own cudagraphs: fused kernels, then captured by us (one graph, no guards per call)
            model_step = torch.compile(step_module, dynamic=False)
            sample_fn = torch.compile(sample_draw, dynamic=False)
        self.body = StepBody(model_step, batch, vocab, device, sample_fn=sample_fn)
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.host_in = torch.zeros(batch + 1, dtype=torch.long).pin_memory()
        self.host_out = torch.zeros(batch, dtype=torch.long).pin_memory()
        self.copied = torch.cuda.Event()  # the last H2D copy out of host_in is done (host_in may be rewritten)
        self.copied.record()
        self.t_host, self.generator, self.banned_source = 0, None, None

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
        if banned is not self.banned_source:  # once per generation, not per token
            self.banned_source = banned
            if banned is None:
                self.body.banned.zero_()
            else:
                self.body.banned.copy_(banned.to(self.device))
        if generator is not self.generator:  # a new generator is a new seed: fresh noise from it
            self.generator = generator
            self._refill()

    def _refill(self) -> None:
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
            from v2m.log import warn

            self.fallback = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            warn(f"decode graph with Inductor kernels failed ({self.fallback}); capturing the eager step instead")
            self.inductor, self.body.step, self.body.sample, self.graphs = False, self.eager_step, sample_draw, {}
            return self._capture(key, fn)

    def _capture(self, key: tuple, fn):
        if key not in self.graphs:
            t_before = self.body.t.clone()
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
        return self.graphs[key]

    def logits(self, ids, pos: int) -> torch.Tensor:
        """Feed ids at `pos`, replay → logits [B, V] (a static buffer: overwritten by the next replay)."""
        self.feed(ids, pos)
        graph, out = self._graph(("logits",), self.body.logits)
        graph.replay()
        return out

    def draw(self, ids, pos: int, temperature: float, top_k: int, top_p: float) -> list[int]:
        """Feed ids at `pos`, replay the step with sampling, read the drawn ids [B] back (the one sync)."""
        if self.t_host >= self.body.noise.shape[0]:
            self._refill()
        self.feed(ids, pos)
        key = ("draw", float(temperature), int(top_k), float(top_p))
        graph, _ = self._graph(key, lambda: self.body.draw(temperature, top_k, top_p))
        graph.replay()
        self.t_host += 1
        self.host_out.copy_(self.body.drawn, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        done.synchronize()
        return self.host_out.tolist()
