"""Decode speed: KV cache vs none, fraction of the weight-streaming limit, eager vs compiled, CLI start-up.

    .venv/bin/python bench/decode.py                       # CPU: default model (or the `small` preset, random weights)
    python bench/decode.py --device cuda --batches 1,16    # GPU: eager vs fast (static cache + torch.compile/CUDA graphs)

Speed does not depend on the weights' values, so without presets/default.safetensors the `small` preset is
built with random weights (--vocab ids). Rates are medians of --repeats runs; every row of the table was
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


def load(args, device):
    from v2m.models.checkpoint import load_model
    from v2m.models.config import load_model_preset
    from v2m.models.registry import build_model

    path = Path(args.model) if args.model else ROOT / "presets" / "default.safetensors"
    if path.is_file():
        return load_model(path, device=str(device)).model, str(path.name)
    torch.manual_seed(0)
    preset = load_model_preset(args.preset)
    return build_model(preset.model.with_vocab(args.vocab)).to(device).eval(), f"preset {args.preset} (random weights)"


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
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    from v2m.models.cache import Decoder
    from v2m.models.sampling import generate

    model, what = load(args, device)
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    V = model.config.vocab_size
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
                nxt = model(ids[:, -args.context:])[:, -1].argmax(-1, keepdim=True)
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
                 step_rate / plain, f"{step_rate / limit:.0%} of limit {limit:,.0f} tok/s"))

    # 3. eager vs compiled single-token step, per batch size
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = torch.randint(3, V, (batch, 16), device=device, generator=gen)
        compiled_row = device.type == "cuda" or args.compile
        if batch == 1 and not compiled_row:
            continue  # the same configuration as the row above
        eager = median_rate(lambda: generate(model, prompts, args.new, temperature=0.0), args.new * batch, args.repeats, device)
        rows.append((f"batch {batch}: eager static cache", eager, eager / plain, ""))
        if compiled_row:
            start = time.perf_counter()
            generate(model, prompts, args.new, temperature=0.0, compile=True)  # warm-up: compile + capture
            warm = time.perf_counter() - start
            same = torch.equal(generate(model, prompts, args.new, temperature=0.0, compile=True),
                               generate(model, prompts, args.new, temperature=0.0))
            fast = median_rate(lambda: generate(model, prompts, args.new, temperature=0.0, compile=True),
                               args.new * batch, args.repeats, device)
            mode = "reduce-overhead (CUDA graphs)" if device.type == "cuda" else "Inductor"
            rows.append((f"batch {batch}: compiled {mode}", fast, fast / plain,
                         f"{fast / eager:.1f}× eager; warm-up {warm:.1f} s; greedy same tokens: {same}"))

    # 4. CLI start-up
    help_times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "v2m.cli.main", "--help"], capture_output=True, check=True)
        help_times.append(time.perf_counter() - start)

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"model: {what}: {params / 1e6:.2f} M parameters, {weight_bytes / 1e6:.1f} MB of weights; "
          f"read bandwidth {bandwidth / 1e9:.1f} GB/s → weight-streaming limit {limit:,.0f} tokens/s at batch 1")
    print()
    print(f"| {'configuration':<66} | {'tokens/s':>10} | {'× no cache':>10} | note")
    print(f"|{'-' * 68}|{'-' * 12}|{'-' * 12}|------")
    for name, rate, ratio, note in rows:
        shown = f"{rate:>10,.0f}" if rate >= 10 else f"{rate:>10.2f}"
        print(f"| {name:<66} | {shown} | {ratio:>10.1f} | {note}")
    print()
    print(f"`v2m --help` wall time: median {statistics.median(help_times):.3f} s of 5 (min {min(help_times):.3f} s)")


if __name__ == "__main__":
    main()
