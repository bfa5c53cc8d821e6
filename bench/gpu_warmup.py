"""Where Inductor's compile pays for itself on the GPU (issue 18): warm-up and steady decode of `generate` per engine.

For each engine — the CUDA graph of the eager kernels ("graph") and the graph over Inductor's fused kernels
("graph+inductor") — in a fresh process: the first generate of a short piece (model on the GPU, compile, capture:
what every `v2m generate --device cuda` pays once), then a long piece on the warm decoder (steps per second),
and the crossover: the number of decode steps from which Inductor's slower warm-up would be won back (the basis
of stages/generate/sampler.py `cuda_engine`). Prints a table and the machine.

    python bench/gpu_warmup.py [--bars 200] [--controls .carry/clip20.controls.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(engine: str, controls_path: str, bars: int) -> dict:
    import torch

    from v2m.models.engines.decoder import DecoderPool
    from v2m.stages.generate import sampler
    from v2m.stages.generate.sampler import GenerateConfig, generate
    from v2m.stages.session import open_model

    started = time.perf_counter()
    session = open_model(None, device="cuda")
    loaded = time.perf_counter() - started
    controls = json.loads(Path(controls_path).read_text())["data"]
    sampler.cuda_engine = lambda model: engine  # this run's engine
    pool = DecoderPool()
    t0 = time.perf_counter()
    first = generate(session.loaded.model, session.vocab, controls, GenerateConfig(seed=0, bars=4), compile=True,
                     decoders=pool)
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    long = generate(session.loaded.model, session.vocab, controls, GenerateConfig(seed=1, bars=bars), compile=True,
                    decoders=pool)
    torch.cuda.synchronize()
    steady = time.perf_counter() - t0
    return {"engine": engine, "load_s": loaded, "first_s": warm, "first_steps": len(first["ids"]),
            "long_s": steady, "long_steps": len(long["ids"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=200)
    parser.add_argument("--controls", default=".carry/clip20.controls.json")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: one engine in this process
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(one(args.engine, args.controls, args.bars)))
        return 0
    rows = []
    for engine in ("graph", "graph+inductor"):
        run = subprocess.run([sys.executable, __file__, "--engine", engine, "--bars", str(args.bars),
                              "--controls", args.controls], capture_output=True, text=True, cwd=ROOT)
        if run.returncode != 0:
            raise SystemExit(f"{engine}: {run.stderr[-800:]}")
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    print("| engine | model load, s | first piece (4 bars, warm-up included), s | long piece steps/s (warm) |\n"
          "|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['engine']} | {r['load_s']:.2f} | {r['first_s']:.2f} | {r['long_steps'] / r['long_s']:,.0f} |")
    graph, inductor = rows
    extra_warmup = inductor["first_s"] - graph["first_s"]
    per_step_gain = graph["long_s"] / graph["long_steps"] - inductor["long_s"] / inductor["long_steps"]
    crossover = extra_warmup / per_step_gain if per_step_gain > 0 else float("inf")
    print(f"\nInductor's extra warm-up {extra_warmup:.1f} s, won back at {per_step_gain * 1e3:.3f} ms a step: "
          f"crossover ≈ {crossover:,.0f} decode steps")
    import torch

    print(f"machine: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {platform.platform()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
