"""Pieces of many videos generated one at a time vs as batches (issue 18: `run --batch`), on one device.

For a folder of controls artifacts (one per video, e.g. 64 short clips), in this one process with the model loaded
once and every decoder warmed up first (warm-up reported apart): the generate stage of every video one at a time
(what `run --batch 1` does) and as batches of R rows (what `run --batch R` does: generate/sampler.py
`generate_many`, padded rows, one generator per video), repeated; the table gives the median wall time, pieces
per hour, tokens per second and the speed-up over one at a time.

    python bench/gpu_batch.py --controls .carry/batch64 --device cuda --rows 1,8,16,32
    python bench/gpu_batch.py --controls .carry/batch64 --device cpu --rows 1,8

Make the controls on a machine with ffmpeg: `v2m sample clipNN.mp4 ...`, `v2m extract-rhythm | v2m encode-tokens`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controls", default=".carry/batch64")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", default="1,8,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    import torch

    from v2m.stages.generate.sampler import DEFAULT_STYLE, GenerateConfig, generate, generate_many, prepare
    from v2m.stages.session import open_model

    started = time.perf_counter()
    session = open_model(args.model, device=args.device)
    load_s = time.perf_counter() - started
    model, vocab, pool = session.loaded.model, session.vocab, session.decoders
    files = sorted(Path(args.controls).glob("*.json"))
    controls = [json.loads(f.read_text())["data"] for f in files]
    config = GenerateConfig(seed=0)
    gpu = args.device.startswith("cuda")

    def sync():
        if gpu:
            torch.cuda.synchronize()

    requests = [prepare(vocab, c, config, style=DEFAULT_STYLE) for c in controls]
    rows_list = [int(r) for r in args.rows.split(",")]
    results, warmups = {}, {}
    for rows in rows_list:
        t0 = time.perf_counter()  # warm-up: one short piece at this batch size (compile, capture)
        if rows == 1:
            generate(model, vocab, {**controls[0]}, GenerateConfig(seed=0, bars=2), compile=gpu, decoders=pool,
                     style=DEFAULT_STYLE)
        else:
            generate_many(model, vocab, requests[:1], config, rows=rows, compile=gpu, decoders=pool)
        sync()
        warmups[rows] = time.perf_counter() - t0
        walls, tokens = [], 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            if rows == 1:
                pieces = [generate(model, vocab, c, config, compile=gpu, decoders=pool, style=DEFAULT_STYLE)["ids"]
                          for c in controls]
            else:
                pieces = [samples[0] for samples in generate_many(model, vocab, requests, config, rows=rows,
                                                                   compile=gpu, decoders=pool)]
            sync()
            walls.append(time.perf_counter() - t0)
            tokens = sum(len(p) for p in pieces)
        results[rows] = (statistics.median(walls), tokens, walls)

    device = torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or platform.machine()} CPU " \
                                                        f"({torch.get_num_threads()} threads)"
    print(f"{len(controls)} videos' pieces on {device}; torch {torch.__version__}, Python {platform.python_version()}; "
          f"model load {load_s:.2f} s; median of {args.repeats}")
    print("| generate | warm-up, s | wall, s (median) | pieces/hour | tokens/s | × one at a time |\n"
          "|---|---:|---:|---:|---:|---:|")
    base = results[rows_list[0]][0]
    for rows in rows_list:
        wall, tokens, walls = results[rows]
        name = "one at a time (batch 1)" if rows == 1 else f"batches of {rows} rows"
        print(f"| {name} | {warmups[rows]:.2f} | {wall:.2f} ({', '.join(f'{w:.2f}' for w in walls)}) | "
              f"{len(controls) / wall * 3600:,.0f} | {tokens / wall:,.0f} | {base / wall:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
