"""Decode speed: KV cache vs none, fraction of the weight-streaming limit, eager vs compiled, CLI start-up.

    .venv/bin/python bench/decode.py                       # CPU: default model (or the `small` preset, random weights)
    .venv/bin/python bench/decode.py --shape d_model=384,n_layers=6,n_heads=6,d_ff=1024   # CPU: another shape, random weights
    python bench/decode.py --device cuda --batches 1,16 --generate   # GPU: eager vs torch.compile vs explicit CUDA graph

GPU rows go through the loop `generate` uses (Decoder.draw/step_draw: host ids in and out, one read-back per
token) greedy and sampled (temperature 1, top-p 0.95); the explicit graphs run in bf16 and are checked
greedy-equal to eager in bf16. `--generate` adds rows timing stages.generate itself on a 20 s clip's
controls (after a warm-up generation: no process start-up, no compile).

CPU rows: fp32 eager (the lean decode step, models/engines/lean.py: one C call per token where it applies) against
the weight-streaming limit (read bandwidth measured in the run ÷ weight bytes), the fp32 per-layer step (MKL's
products between C helpers) for comparison, then the same model quantized W8A8 (RTN) per CPU kernel
(`auto` = what generate picks; cpu-int8 = fbgemm), each as a ratio to fp32 from back-to-back pairs.

Speed does not depend on the weights' values, so without presets/default.safetensors (or with --shape) the
`small` preset is built with random weights (--vocab ids). Rates are medians of --repeats runs; every row of the table was
measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_rate(fn, tokens: int, repeats: int, device) -> float:
    """tokens/s of fn() (which produces `tokens` tokens), the median of `repeats` timed runs after one warm-up."""
    fn()
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        rates.append(tokens / (time.perf_counter() - start))
    return statistics.median(rates)


def read_bandwidth(device, mbytes: int = 512, repeats: int = 5) -> float:
    """Bytes/s of reading a large fp32 buffer once (a sum): the memory roofline for weight streaming."""
    x = torch.ones(mbytes * 2**20 // 4, device=device)
    x.sum()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        x.sum()
        sync(device)
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / statistics.median(times)


SAMPLED = None  # set in main: the sampling generate uses by default (temperature 1, top-p 0.95)
LABELS = {"eager": "eager static cache", "reduce-overhead": "torch.compile reduce-overhead (CUDA graphs)",
          "graph": "explicit CUDA graph, eager kernels", "graph+inductor": "explicit CUDA graph, Inductor kernels",
          "inductor": "torch.compile Inductor"}


def draw_loop(decoder, prompts, n, sampling=None, generator=None) -> list[list[int]]:
    """prefill + n - 1 steps with host ids in and out (Decoder.draw / step_draw, as generate does) → the ids."""
    from v2m.models.sampling import Sampling

    sampling = sampling or Sampling(0.0)
    ids = decoder.draw(decoder.prefill(prompts), sampling, None, generator)
    out, length = [ids], prompts.shape[1]
    for i in range(n - 1):
        ids = decoder.step_draw(ids, length + i, sampling, None, generator)
        out.append(ids)
    return out


def agreement(a, b) -> str:
    """'same tokens' or where two greedy runs first differ (bf16 rounding can flip a near-tie)."""
    if b is None:
        return "no eager run"
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return "same tokens" if first is None and len(a) == len(b) else f"differ from step {first} of {len(a)}"


def sample_controls(args):
    """A 20 s synthetic clip → rhythm → controls (needs ffmpeg); without ffmpeg the same controls saved
    from a CPU run (bench/data/decode_controls_20s.json)."""
    import json
    import shutil
    import tempfile

    from v2m.stages.session import open_model

    vocab = open_model(args.model).vocab
    why = "no ffmpeg here"
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        try:
            from v2m.samples import write_video
            from v2m.stages.rhythm.extract import extract_rhythm
            from v2m.stages.tokens.video_controls import controls_from_rhythm

            with tempfile.TemporaryDirectory() as tmp:
                write_video(Path(tmp) / "clip.mp4")
                rhythm = extract_rhythm(str(Path(tmp) / "clip.mp4"))["data"]
                return controls_from_rhythm(rhythm, vocab), vocab, "made now"
        except Exception as e:  # noqa: BLE001 — e.g. librosa missing on the GPU machine: use the saved controls
            why = f"{type(e).__name__}: {e}"[:100]
    saved = json.loads((ROOT / "bench/data/decode_controls_20s.json").read_text())
    return saved, vocab, f"saved from a CPU run ({why})"


def generate_rows(args, model, device, plain) -> list[tuple]:
    """tokens/s of stages.generate (the default sampling) on a 20 s clip's controls, eager and compile=True."""
    import inspect

    from v2m.models.engines.decoder import DecoderPool
    from v2m.stages.generate import sampler as stage

    controls, vocab, how = sample_controls(args)
    fused = "step_draw" in inspect.getsource(getattr(stage, "sample_parts", None) or stage.sample_pieces)
    rows = []
    for compile in ([False, True] if device.type == "cuda" or args.compile else [False]):
        pool = DecoderPool()
        start = time.perf_counter()
        stage.generate(model, vocab, controls, stage.GenerateConfig(seed=0), compile=compile, decoders=pool)  # warm-up
        warm = time.perf_counter() - start
        rates, tokens = [], 0
        for seed in range(1, args.repeats + 2):
            sync(device)
            start = time.perf_counter()
            out = stage.generate(model, vocab, controls, stage.GenerateConfig(seed=seed), compile=compile,
                                 decoders=pool)
            sync(device)
            rates.append(len(out["ids"]) / (time.perf_counter() - start))
            tokens += len(out["ids"])
        rate = statistics.median(rates)
        rows.append((f"inside v2m generate (stages.generate), compile={compile}", rate, plain and rate / plain,
                     f"{1e3 / rate:.3f} ms/token; {len(controls['bars'])} bars, {tokens / len(rates):.0f} tokens/piece; "
                     f"warm-up {warm:.1f} s; loop uses {'Decoder.step_draw' if fused else 'step + sample_next'}; controls {how}"))
    return rows


def load(args, device):
    import dataclasses

    from v2m.models.config import load_model_preset
    from v2m.models.loading import load_model
    from v2m.models.registry import build_model

    path = Path(args.model) if args.model else ROOT / "presets" / "default.safetensors"
    if path.is_file() and not args.shape:
        return load_model(path, device=str(device)).model, str(path.name)
    torch.manual_seed(0)
    config = load_model_preset(args.preset).model.with_vocab(args.vocab)
    what = f"preset {args.preset}"
    if args.shape:  # e.g. d_model=384,n_layers=6,n_heads=6,d_ff=1024: a shape no checkpoint has yet
        changes = {k: int(v) for k, v in (item.split("=") for item in args.shape.split(","))}
        config = dataclasses.replace(config, **changes)
        what = f"preset {args.preset} with {args.shape}"
    return build_model(config).to(device).eval(), f"{what} (random weights)"


def per_layer_row(args, model, short, one_call_rate, plain) -> list[tuple]:
    """The fp32 step as it was before the one-call step: MKL's products between per-layer C helpers (the fp32
    row above is the fastest fp32 configuration only if this one is slower)."""
    from v2m.models.engines.decoder import Decoder
    from v2m.models.engines.native import NativeStep

    decoder = Decoder(model, 1, 16 + args.new)
    if decoder._lean is None or decoder._lean.native is None:
        return []
    decoder._lean.native = NativeStep.build(model, decoder.cache, one_call=False)

    def loop():
        logits = decoder.prefill(short)
        for i in range(args.new - 1):
            logits = decoder.step(logits.argmax(-1), 16 + i)

    rate = median_rate(loop, args.new, args.repeats, torch.device("cpu"))
    return [("batch 1, 16-token prompt, fp32 per layer (MKL products + C helpers)", rate, rate / plain,
             f"the one-call step above is {one_call_rate / rate:.2f}× this")]


def int8_rows(args, model, device, fp32_rate, bandwidth, plain) -> list[tuple]:
    """Batch 1 greedy decode of the W8A8 model (RTN: speed does not depend on the weights' values) through
    generate's Decoder, per CPU kernel, against the fp32 rate measured in the same run (back-to-back pairs)."""
    import copy

    from v2m.models.engines.loop import generate
    from v2m.quant.linear import set_kernels
    from v2m.quant.pipeline import QuantizeConfig, quantize_model

    quantized = copy.deepcopy(model)
    quantize_model(quantized, QuantizeConfig(scheme="w8a8", method="rtn"), None)
    q_bytes = sum(t.numel() * t.element_size() for t in [*quantized.parameters(), *quantized.buffers()]
                  if t is not quantized.rope_cos and t is not quantized.rope_sin)
    short = torch.randint(3, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
    rows = []
    for kernel in args.int8_kernels.split(","):
        try:
            chosen = set_kernels(quantized, kernel, log_choice=False)
        except Exception as e:  # noqa: BLE001 — an unavailable kernel is a row saying so
            rows.append((f"batch 1, 16-token prompt, W8A8 kernel {kernel}", 0.0, None, f"unavailable: {e}"[:160]))
            continue
        names = ",".join(sorted(set(chosen.values())))
        ratios, rates = [], []
        for i in range(args.repeats):  # back-to-back pairs: both rates see the same load
            pair = [("f", model), ("q", quantized)][:: 1 if i % 2 == 0 else -1]
            got = {tag: median_rate(lambda m=m: generate(m, short, args.new, temperature=0.0), args.new, 1, device)
                   for tag, m in pair}
            ratios.append(got["q"] / got["f"])
            rates.append(got["q"])
        rate = statistics.median(rates)
        rows.append((f"batch 1, 16-token prompt, W8A8 ({names})", rate, rate / plain,
                     f"**{statistics.median(ratios):.2f}× fp32** (median of {len(ratios)} back-to-back pairs); "
                     f"{q_bytes / 1e6:.1f} MB of weights: {rate / (bandwidth / q_bytes):.0%} of its limit "
                     f"{bandwidth / q_bytes:,.0f} tok/s"))
    return rows


def print_table(args, device, what, params, weight_bytes, bandwidth, rows) -> None:
    from v2m.models.engines.calls import DECODE_THREADS

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"({DECODE_THREADS} in CPU decode steps, V2M_DECODE_THREADS)"
          + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"model: {what}: {params / 1e6:.2f} M parameters, {weight_bytes / 1e6:.1f} MB of weights"
          + (f"; read bandwidth {bandwidth / 1e9:.1f} GB/s → weight-streaming limit "
             f"{bandwidth / weight_bytes:,.0f} tokens/s at batch 1" if bandwidth else ""))
    print()
    print(f"| {'configuration':<66} | {'tokens/s':>10} | {'× no cache':>10} | note")
    print(f"|{'-' * 68}|{'-' * 12}|{'-' * 12}|------")
    for name, rate, ratio, note in rows:
        shown = f"{rate:>10,.0f}" if rate >= 10 else f"{rate:>10.2f}"
        ratio = f"{ratio:>10.1f}" if ratio is not None else f"{'-':>10}"
        print(f"| {name:<66} | {shown} | {ratio} | {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a v2m.model checkpoint (default: presets/default.safetensors if present)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--context", type=int, default=1024,
                        help="tokens of context for the cache vs no-cache rows (capped at max_len - new)")
    parser.add_argument("--new", type=int, default=64, help="tokens generated per timed run")
    parser.add_argument("--batches", default="1", help="batch sizes for the eager vs compiled rows (GPU)")
    parser.add_argument("--compile", action="store_true", help="also time the compiled step on CPU (Inductor)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--generate", action="store_true",
                        help="also time stages.generate on a 20 s clip's controls (the 'inside v2m generate' row)")
    parser.add_argument("--engines", help="engine[:bf16],... for the per-batch rows (default: CUDA eager, eager:bf16, "
                        "reduce-overhead, graph:bf16, graph+inductor:bf16; CPU eager, inductor)")
    parser.add_argument("--only-generate", action="store_true", help="only the 'inside v2m generate' rows")
    parser.add_argument("--shape", help="random-weight model of --preset with these config changes, e.g. "
                        "d_model=384,n_layers=6,n_heads=6,d_ff=1024 (speed does not depend on weight values)")
    parser.add_argument("--int8-kernels", default="auto,cpu-int8",
                        help="CPU W8A8 kernels for the int8 rows ('' for none)")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.engines = args.engines or ("eager,eager:bf16,reduce-overhead,graph:bf16,graph+inductor:bf16"
                                    if device.type == "cuda" else "eager,inductor")
    if args.threads:
        torch.set_num_threads(args.threads)

    from v2m.models.engines.decoder import Decoder
    from v2m.models.engines.loop import generate
    from v2m.models.sampling import Sampling

    global SAMPLED
    SAMPLED = Sampling(1.0, 0, 0.95)

    model, what = load(args, device)
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    V = model.config.vocab_size
    if args.only_generate:
        print_table(args, device, what, params, weight_bytes, None, generate_rows(args, model, device, None))
        return
    args.context = min(args.context, model.config.max_len - args.new)
    gen = torch.Generator(device=device).manual_seed(0)
    prompt = torch.randint(3, V, (1, args.context), device=device, generator=gen)
    rows = []

    # 1. KV cache vs none at `context` tokens of context, batch 1 (greedy; same tokens, checked)
    n_plain = max(4, args.new // 8)

    def no_cache():
        ids = prompt
        with torch.no_grad():
            for _ in range(n_plain):
                nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
                ids = torch.cat([ids, nxt], 1)
        return ids

    decoder = Decoder(model, 1, args.context + args.new)
    first = decoder.prefill(prompt).argmax(-1)

    def with_cache(n=args.new):
        """n decode steps after the prompt (the prefill is done once, outside the timing)."""
        ids, nxt = [], first
        for i in range(n):
            ids.append(nxt)
            nxt = decoder.step(nxt, args.context + i).argmax(-1)
        return torch.stack(ids, 1)

    assert torch.equal(no_cache()[:, args.context:], with_cache(n_plain)), "cache path disagrees with the full forward"
    plain = median_rate(no_cache, n_plain, args.repeats, device)
    cached = median_rate(with_cache, args.new, args.repeats, device)
    rows.append((f"batch 1, {args.context} ctx: no KV cache (full forward per token)", plain, 1.0, ""))
    rows.append((f"batch 1, {args.context} ctx: static KV cache (decode steps)", cached, cached / plain, ""))

    # 2. batch 1 from a short prompt: how close to the weight-streaming limit
    bandwidth = read_bandwidth(device)
    limit = bandwidth / weight_bytes
    short = prompt[:, :16]
    step_rate = median_rate(lambda: generate(model, short, args.new, temperature=0.0), args.new, args.repeats, device)
    rows.append((f"batch 1, 16-token prompt, eager static cache ({next(model.parameters()).dtype})", step_rate,
                 step_rate / plain, f"**{step_rate / limit:.0%} of limit** {limit:,.0f} tok/s"))
    if device.type == "cpu":
        rows.extend(per_layer_row(args, model, short, step_rate, plain))
    if device.type == "cpu" and args.int8_kernels:
        rows.extend(int8_rows(args, model, device, step_rate, bandwidth, plain))

    # 3. per batch size: eager vs torch.compile (reduce-overhead) vs the explicit CUDA graph (models/engines/graph.py),
    # all through the loop generate uses: host ids in, host ids out, one read-back per token (step_draw)
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = torch.randint(3, V, (batch, 16), device=device, generator=gen)
        if device.type != "cuda" and not args.compile:
            if batch != 1:
                rate = median_rate(lambda: draw_loop(Decoder(model, batch, 16 + args.new), prompts, args.new),
                                   args.new * batch, args.repeats, device)
                rows.append((f"batch {batch}: eager static cache", rate, rate / plain, ""))
            continue
        engines = [(e.split(":")[0], torch.bfloat16 if e.endswith(":bf16") else None) for e in args.engines.split(",")]
        results = {}
        for engine, dtype in engines:
            name = str(dtype or next(model.parameters()).dtype).replace("torch.", "")
            try:
                decoder = Decoder(model, batch, 16 + args.new, compile=False if engine == "eager" else engine,
                                  dtype=dtype)
                start = time.perf_counter()
                greedy = draw_loop(decoder, prompts, args.new)  # warm-up: compile + capture
                warm = time.perf_counter() - start
                rate = median_rate(lambda: draw_loop(decoder, prompts, args.new), args.new * batch, args.repeats, device)
                sampled = median_rate(lambda: draw_loop(decoder, prompts, args.new, SAMPLED, gen),
                                      args.new * batch, args.repeats, device)
            except Exception as e:  # noqa: BLE001 — one engine failing must not hide the others' rows
                rows.append((f"batch {batch}: {LABELS[engine]} ({name})", 0.0, 0.0,
                             f"FAILED {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]))
                continue
            results[engine, dtype] = greedy
            same = ""
            if engine != "eager":
                same = f"greedy vs eager {name}: {agreement(greedy, results.get(('eager', dtype)))}; warm-up {warm:.1f} s; "
            if decoder.graph is not None and decoder.graph.fallback:
                same += f"Inductor fell back to eager kernels ({decoder.graph.fallback[:80]}); "
            bytes_ = weight_bytes * (2 if name == "bfloat16" else 4) // next(model.parameters()).element_size()
            rows.append((f"batch {batch}: {LABELS[engine]} ({name})", sampled, sampled / plain,
                         f"{1e3 * batch / sampled:.3f} ms/step; greedy {rate:,.0f} tok/s; {same}"
                         f"{sampled / batch / (bandwidth / bytes_):.0%} of limit {bandwidth / bytes_:,.0f} steps/s"))

    # 3b. inside `v2m generate`: stages.generate on a 20 s clip's controls with this model (no process start-up)
    if args.generate:
        rows.extend(generate_rows(args, model, device, plain))

    # 4. CLI start-up
    help_times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "v2m.cli.main", "--help"], capture_output=True, check=True)
        help_times.append(time.perf_counter() - start)

    print_table(args, device, what, params, weight_bytes, bandwidth, rows)
    print()
    print(f"`v2m --help` wall time: median {statistics.median(help_times):.3f} s of 5 (min {min(help_times):.3f} s)")


if __name__ == "__main__":
    main()
