"""Speed of extract-rhythm against ffmpeg merely decoding the same 720p clip, measured side by side.

For each repetition (interleaved, so load changes hit every contender alike):

- ``ffmpeg -i CLIP -f null -``: decode everything at source resolution (the baseline),
- ``v2m extract-rhythm CLIP --method flow`` and ``--method diff``: the whole command, start-up included.

Reported: median wall time, its ratio to the baseline (target for flow: <= 1.0), frames/s, and the
CPU time (user + sys of the process and its children) with its ratio — on a shared machine the CPU
ratio is the steadier figure.

    .venv/bin/python bench/rhythm_speed.py                        # 30 s 1280x720 clip, 3 repetitions
    .venv/bin/python bench/rhythm_speed.py --clip my.mp4 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from v2m.samples import SampleSpec, write_video


def timed(args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child and its children) of one command, output discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def count_frames(clip: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                          "stream=nb_read_packets", "-of", "json", str(clip)], capture_output=True, check=True).stdout
    return int(json.loads(out)["streams"][0]["nb_read_packets"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", help="video to time (default: a synthetic 1280x720 clip, made once)")
    parser.add_argument("--duration", type=float, default=30.0, help="length of the synthetic clip, seconds")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if args.clip:
        clip = Path(args.clip)
    else:
        clip = Path(tempfile.gettempdir()) / f"v2m-speed-720p-{args.duration:g}s.mp4"
        if not clip.exists():
            print(f"making {clip} ...", file=sys.stderr)
            write_video(clip, SampleSpec(bpm=120, duration=args.duration, width=1280, height=720, noise=6.0, seed=5))
    v2m = shutil.which("v2m") or str(Path(sys.executable).with_name("v2m"))
    contenders = {
        "ffmpeg decode (baseline)": ["ffmpeg", "-v", "error", "-nostdin", "-i", str(clip), "-f", "null", "-"],
        "extract-rhythm --method flow": [v2m, "-q", "extract-rhythm", str(clip), "--method", "flow"],
        "extract-rhythm --method diff": [v2m, "-q", "extract-rhythm", str(clip), "--method", "diff"],
    }
    frames = count_frames(clip)
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start; python {platform.python_version()}")
    print(f"clip: {clip.name}, {frames} frames, {clip.stat().st_size / 1e6:.1f} MB")
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(args.reps):
        for name, command in contenders.items():
            wall, cpu = timed(command)
            walls[name].append(wall)
            cpus[name].append(cpu)
            print(f"  rep {rep + 1}: {name:30} {wall:6.2f} s wall, {cpu:6.2f} s CPU", file=sys.stderr)
    base_wall = statistics.median(walls["ffmpeg decode (baseline)"])
    base_cpu = statistics.median(cpus["ffmpeg decode (baseline)"])
    print(f"\n{'command':30} {'wall s':>7} {'÷ decode':>8} {'frames/s':>8} {'CPU s':>7} {'CPU ÷ decode':>12}")
    for name in contenders:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"{name:30} {wall:7.2f} {wall / base_wall:8.2f} {frames / wall:8.0f} {cpu:7.2f} {cpu / base_cpu:12.2f}")
    print(f"(median of {args.reps} interleaved repetitions; load average {os.getloadavg()[0]:.1f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
