"""Throughput of `v2m run` on a folder of short clips by executor: one process, `--jobs 2` (two worker processes),
and Ray (a local cluster of 2 CPUs: a task per video, one model actor) — issue 22.

    .venv/bin/python bench/run_scale.py                      # 40 clips of 3 s, each way once
    .venv/bin/python bench/run_scale.py --clips 12 --repeats 3
    python3 bench/run_scale.py --clips 64 --seconds 8 --way "cpu, 8 processes=--device cpu --jobs 8" \
        --way "cuda, batches of 8=--device cuda"          # issue 18: videos/hour, CPU vs GPU (any ways: --way)

Each way runs the real command line (`python -m v2m.cli.main run DIR -o OUT ...`, a fresh OUT each time), so start-up
counts: the interpreter, the model load(s), spawning workers, starting Ray. Figures:

- videos per hour: clips / the command's wall time;
- scheduling overhead per video: (wall × parallel slots − Σ each video's own wall time, from its marker) / clips —
  the time a slot was not making a video (start-up, waiting for work, handing results back), per video.

The median over --repeats. Prints a table and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "scale"
V2M = [sys.executable, "-m", "v2m.cli.main"]
WAYS = {"one process": ([], 1), "--jobs 2": (["--jobs", "2"], 2),
        "Ray, local, 2 CPUs": (["--executor", "ray", "--jobs", "1"], 2)}


def clips(count: int, seconds: float) -> Path:
    folder = WORK / f"clips{count}x{seconds:g}"
    if len(list(folder.glob("*.mp4"))) < count:
        folder.mkdir(parents=True, exist_ok=True)

        def make(i: int) -> None:
            subprocess.run([*V2M, "sample", str(folder / f"clip{i:02d}.mp4"), "--duration", f"{seconds:g}",
                            "--width", "160", "--height", "96", "--fps", "15", "--seed", str(i),
                            "--bpm", str(80 + 3 * i % 90)], check=True, capture_output=True)

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(make, range(count)))
    return folder


def once(folder: Path, extra: list[str], env: dict) -> tuple[float, list[float]]:
    """(wall s, each video's own wall s) of one `run` of the folder into a fresh OUT."""
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        out = Path(scratch) / "out"
        started = time.perf_counter()
        proc = subprocess.run([*V2M, "run", str(folder), "-o", str(out), *extra], capture_output=True, text=True,
                              env=env)
        wall = time.perf_counter() - started
        if proc.returncode:
            raise SystemExit(f"run {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
        videos = [json.loads(m.read_text())["wall_seconds"] for m in out.glob("*.done.json")]
    return wall, videos


def parse_way(text: str) -> tuple[str, tuple[list[str], int]]:
    """'NAME=ARGS' → (NAME, (ARGS split, parallel slots = its --jobs × its --batch, each else 1))."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise SystemExit(f"--way {text!r}: expected NAME=ARGS, e.g. 'cuda=--device cuda --batch 8'")
    extra = rest.split()
    slots = 1
    for flag in ("--jobs", "--batch"):
        slots *= int(extra[extra.index(flag) + 1]) if flag in extra else 1
    return name.strip(), (extra, slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--way", action="append", default=[], help="NAME=ARGS: a way to run (repeatable; default: "
                        "one process, --jobs 2, Ray); the first is the baseline of the ratio column")
    args = parser.parse_args()
    ways = dict(parse_way(w) for w in args.way) if args.way else WAYS
    WORK.mkdir(parents=True, exist_ok=True)
    folder = clips(args.clips, args.seconds)
    env = {**os.environ, "V2M_QUIET": "1"}
    env.pop("RAY_ADDRESS", None)  # Ray's way: a local cluster on this machine's CPUs
    figures: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
    for repeat in range(args.repeats):
        for way, (extra, slots) in ways.items():  # interleaved: each repeat sees the machine's load alike
            wall, videos = once(folder, extra, env)
            assert len(videos) == args.clips, (way, len(videos))
            figures[way].append((args.clips / wall * 3600, (wall * slots - sum(videos)) / args.clips))
            print(f"  {way}: {wall:.1f} s", file=sys.stderr, flush=True)
    gpu = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_name() if "
                          "torch.cuda.is_available() else 'no GPU')"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {gpu}, Python "
          f"{platform.python_version()} — shared with other jobs: absolute figures are noisy, ratios less so")
    print(f"{args.clips} clips of {args.seconds:g} s, median of {args.repeats}")
    first = next(iter(figures))
    base = statistics.median(v for v, _ in figures[first])
    width = max(20, *(len(way) for way in figures))
    print(f"{'way':<{width}} | {'videos/hour':>11} | {'× ' + first:>{len(first) + 2}} | {'overhead s/video':>16}")
    for way, rows in figures.items():
        rate = statistics.median(v for v, _ in rows)
        overhead = statistics.median(o for _, o in rows)
        print(f"{way:<{width}} | {rate:>11.0f} | {rate / base:>{len(first) + 2}.2f} | {overhead:>16.2f}")
    shutil.rmtree(WORK / "out", ignore_errors=True)


if __name__ == "__main__":
    main()
