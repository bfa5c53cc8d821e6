"""Where Inductor's compile pays for itself on the GPU (issue 18): warm-up and steady decode of `generate` per engine.

For each engine — the CUDA graph of the eager kernels ("graph") and the graph over Inductor's fused kernels
("graph+inductor") — in a fresh process: the first generate of a short piece (model on the GPU, compile, capture:
what every `v2m generate --device cuda` pays once), then a long piece on the warm decoder (steps per second),
and the crossover: the number of decode steps from which Inductor's slower warm-up would be won back (the basis
of stages/generate/sampler.py `cuda_engine`). Inductor runs twice over one cache folder (TORCHINDUCTOR_CACHE_DIR):
cold, then warm as in a user's second process. Prints a table and the machine.

    python bench/gpu_warmup.py [--bars 200] [--controls .carry/clip20.controls.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
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
    sampler.cuda_engine = lambda model, *_: engine  # this run's engine (whatever the piece's length)
    pool = DecoderPool()

    def timed(seed: int, n: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        out = generate(session.loaded.model, session.vocab, controls, GenerateConfig(seed=seed, bars=n),
                       compile=True, decoders=pool)
        torch.cuda.synchronize()
        return time.perf_counter() - t0, len(out["ids"])

    first_s, first_steps = timed(0, 4)           # compile + capture of the first span bucket
    long1_s, long1_steps = timed(1, bars)        # crosses into the second bucket (its capture) and slides
    long2_s, long2_steps = timed(2, bars)        # everything captured: the steady rate
    per_step = long2_s / long2_steps
    warmup = first_s - first_steps * per_step + long1_s - long1_steps * per_step
    return {"engine": engine, "load_s": loaded, "first_s": first_s, "warmup_s": warmup,
            "long_s": long2_s, "long_steps": long2_steps}


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
    with tempfile.TemporaryDirectory() as cache:  # Inductor's cache: cold in the first inductor run, warm in the second
        for engine, label in (("graph", "graph"), ("graph+inductor", "graph+inductor, cold cache"),
                              ("graph+inductor", "graph+inductor, warm cache")):
            run = subprocess.run([sys.executable, __file__, "--engine", engine, "--bars", str(args.bars),
                                  "--controls", args.controls], capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
            if run.returncode != 0:
                raise SystemExit(f"{engine}: {run.stderr[-800:]}")
            rows.append({**json.loads(run.stdout.strip().splitlines()[-1]), "label": label})
    print("| engine | model load, s | first piece (4 bars), s | warm-up in all (compile, captures), s | "
          "steady steps/s |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['label']} | {r['load_s']:.2f} | {r['first_s']:.2f} | {r['warmup_s']:.2f} | "
              f"{r['long_steps'] / r['long_s']:,.0f} |")
    graph = rows[0]
    for inductor in rows[1:]:
        extra_warmup = inductor["warmup_s"] - graph["warmup_s"]
        per_step_gain = graph["long_s"] / graph["long_steps"] - inductor["long_s"] / inductor["long_steps"]
        crossover = extra_warmup / per_step_gain if per_step_gain > 0 else float("inf")
        print(f"\n{inductor['label']}: extra warm-up {extra_warmup:.1f} s, won back at {per_step_gain * 1e3:.3f} ms "
              f"a step: crossover ≈ {crossover:,.0f} decode steps")
    import torch
    print(f"machine: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {platform.platform()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
