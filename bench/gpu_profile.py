"""Where a batch-1 GPU decode step spends its time: wall per token vs GPU time per replay, the kernels of one
replay, and how the step's cost moves with the cache length (attention spans all slots) and Inductor's mode.

    python bench/gpu_profile.py [--model presets/default.safetensors] [--shape 384,6,6,1024] [--tokens 400]

Rows are medians of --repeats runs of --tokens step_draw calls (the loop `generate` uses: host ids in, one
read-back per token), all in this one run. A random-weight model of another shape (d_model, layers, heads,
d_ff) can be timed next to the checkpoint: decode speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build(args):
    from v2m.models.loading import load_model

    models = []
    path = Path(args.model or ROOT / "presets" / "default.safetensors")
    loaded = load_model(path, device="cuda").model.eval()
    models.append((path.name, loaded))
    if args.shape:
        import dataclasses

        from v2m.models.registry import build_model

        d, layers, heads, ff = (int(v) for v in args.shape.split(","))
        config = dataclasses.replace(loaded.config, d_model=d, n_layers=layers, n_heads=heads, d_ff=ff)
        torch.manual_seed(0)
        models.append((f"random d{d} L{layers} H{heads} ff{ff}", build_model(config).cuda().eval()))
    return models


def time_loop(decoder, tokens: int, repeats: int, sampling) -> tuple[float, float]:
    """(tokens/s wall, GPU ms per replay) of `tokens` step_draw calls cycling through the cache's positions."""
    start_pos, span = 16, decoder.max_len - 16
    decoder.draw(decoder.prefill(torch.zeros(1, start_pos, dtype=torch.long, device="cuda")), sampling)
    ids = [5]
    for i in range(8):  # warm-up (compile + capture)
        ids = decoder.step_draw(ids, start_pos + i, sampling)
    rates, gpu = [], []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(tokens):
            ids = decoder.step_draw(ids, start_pos + i % span, sampling)
        torch.cuda.synchronize()
        rates.append(tokens / (time.perf_counter() - t0))
    graph = next(iter(g for k, g in decoder.graph.graphs.items() if k[0] == "draw"))[0]
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(repeats):
        decoder.graph.body.t.zero_()  # each replay reads the next noise row: stay inside the buffer
        a.record()
        for _ in range(100):
            graph.replay()
        b.record()
        b.synchronize()
        gpu.append(a.elapsed_time(b) / 100)
    decoder.graph._refill()
    return statistics.median(rates), statistics.median(gpu)


def kernel_table(decoder, sampling, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    ids = [5]
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for i in range(50):
            ids = decoder.step_draw(ids, 100 + i, sampling)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--shape", default="384,6,6,1024", help="d_model,layers,heads,d_ff of a random model ('' none)")
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", default="1024,512,256")
    parser.add_argument("--modes", default="default,max-autotune-no-cudagraphs")
    parser.add_argument("--kernels", type=int, default=30, help="rows of the kernel table (0: none)")
    args = parser.parse_args()

    from v2m.models.engines import graph as graph_module
    from v2m.models.engines.decoder import Decoder
    from v2m.models.sampling import Sampling

    sampling = Sampling(1.0, 0, 0.95)
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}")
    compile_fn = torch.compile
    rows = []
    for name, model in build(args):
        params = sum(p.numel() for p in model.parameters())
        for mode in args.modes.split(","):
            def patched(fn, mode=mode, **kw):
                return compile_fn(fn, **kw) if mode == "default" else compile_fn(fn, mode=mode, **kw)

            graph_module.torch.compile = patched
            for length in (int(v) for v in args.lengths.split(",")):
                t0 = time.perf_counter()
                try:
                    decoder = Decoder(model, 1, length, compile=True)
                    rate, gpu_ms = time_loop(decoder, args.tokens, args.repeats, sampling)
                except Exception as e:  # noqa: BLE001 — one configuration failing must not hide the others
                    rows.append((name, params, mode, length, 0.0, 0.0, f"FAILED {type(e).__name__}: {e}"[:120]))
                    continue
                rows.append((name, params, mode, length, rate, gpu_ms, f"{time.perf_counter() - t0:.1f} s incl. warm-up"))
                print(rows[-1], flush=True)
                if args.kernels and length == 1024 and mode == "default":
                    print(f"\nkernels of 50 steps, {name}, cache {length}, {mode}:")
                    print(kernel_table(decoder, sampling, args.kernels), flush=True)
                del decoder
            graph_module.torch.compile = compile_fn
    print("\n| model | params | Inductor mode | cache slots | tokens/s (wall) | GPU ms/replay | wall ms/token | note |")
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for name, params, mode, length, rate, gpu_ms, note in rows:
        wall = 1e3 / rate if rate else 0.0
        print(f"| {name} | {params / 1e6:.2f} M | {mode} | {length} | {rate:,.0f} | {gpu_ms:.3f} | {wall:.3f} | {note} |")


if __name__ == "__main__":
    main()
