"""Speed of extract-rhythm against ffmpeg merely decoding the same 720p clip, measured side by side.

For each repetition (interleaved, so load changes hit every contender alike):

- ``ffmpeg -i CLIP -f null -``: decode everything at source resolution, default settings (the baseline),
- ``v2m extract-rhythm CLIP --method flow`` and ``--method diff``: the whole command, start-up included.

Reported: median wall time, the median of the per-repetition ratios to the baseline run next to
it (target for flow: <= 1.0), frames/s, and CPU time (user + sys of the process and its children)
with its ratio. The machine is described, and for every run the CPU that *other* processes used
meanwhile is measured (all cores' busy time from /proc/stat minus our own): a figure taken while
others worked is flagged, since a multi-threaded baseline and a two-process pipeline suffer from
foreign load differently. ``--quiet-below`` waits (up to ``--max-wait`` s) before each repetition
until the machine is that idle.

    .venv/bin/python bench/rhythm_speed.py                        # 30 s 1280x720 clip, 5 repetitions
    .venv/bin/python bench/rhythm_speed.py --clip my.mp4 --reps 7 --quiet-below 0.1
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

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (Linux /proc/stat), None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / TICK


def others_cores(seconds: float = 1.0) -> float | None:
    """How many cores other processes keep busy now, sampled over `seconds`."""
    before = busy_seconds()
    if before is None:
        return None
    time.sleep(seconds)
    return (busy_seconds() - before) / seconds


def timed(args: list[str]) -> tuple[float, float, float | None]:
    """(wall s, CPU s of the command and its children, cores other processes used meanwhile) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_seconds()
    start = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    others = None if busy is None else max(0.0, (busy_seconds() - busy - cpu) / wall)
    return wall, cpu, others


def count_frames(clip: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                          "stream=nb_read_packets", "-of", "json", str(clip)], capture_output=True, check=True).stdout
    return int(json.loads(out)["streams"][0]["nb_read_packets"])


def describe_clip(clip: Path) -> str:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height,r_frame_rate,"
                          "bit_rate", "-of", "json", str(clip)], capture_output=True, check=True).stdout
    parts = []
    for s in json.loads(out)["streams"]:
        if s.get("codec_type") == "video":
            parts.append(f"{s['codec_name']} {s['width']}x{s['height']} {s['r_frame_rate']} fps "
                         f"{int(s.get('bit_rate', 0)) / 1e6:.1f} Mb/s")
        elif s.get("codec_type") == "audio":
            parts.append(f"audio {s['codec_name']}")
    return ", ".join(parts)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return (f"{platform.platform()}, {model}, {os.cpu_count()} CPUs; python {platform.python_version()}; "
            f"{' '.join(ffmpeg.split()[:3])}")


def wait_quiet(threshold: float, longest: float) -> float | None:
    """Wait until other processes use fewer than `threshold` cores (at most `longest` s); the last reading."""
    deadline = time.monotonic() + longest
    while True:
        now = others_cores()
        if now is None or now < threshold or time.monotonic() > deadline:
            return now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", help="video to time (default: a synthetic 1280x720 clip, made once)")
    parser.add_argument("--duration", type=float, default=30.0, help="length of the synthetic clip, seconds")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--methods", default="flow,diff", help="extract-rhythm methods to time")
    parser.add_argument("--quiet-below", type=float, default=None, metavar="CORES",
                        help="before each repetition wait until other processes use fewer cores than this")
    parser.add_argument("--max-wait", type=float, default=120.0, help="longest wait for quiet, seconds")
    args = parser.parse_args()
    if args.clip:
        clip = Path(args.clip)
    else:
        clip = Path(tempfile.gettempdir()) / f"v2m-speed-720p-{args.duration:g}s.mp4"
        if not clip.exists():
            print(f"making {clip} ...", file=sys.stderr)
            write_video(clip, SampleSpec(bpm=120, duration=args.duration, width=1280, height=720, noise=6.0, seed=5))
    v2m = shutil.which("v2m") or str(Path(sys.executable).with_name("v2m"))
    baseline = "ffmpeg -i CLIP -f null -"
    contenders = {baseline: ["ffmpeg", "-v", "error", "-nostdin", "-i", str(clip), "-f", "null", "-"]}
    for method in args.methods.split(","):
        contenders[f"extract-rhythm --method {method}"] = [v2m, "-q", "extract-rhythm", str(clip), "--method", method]
    frames = count_frames(clip)
    print(f"machine: {machine()}")
    print(f"clip: {clip.name}, {describe_clip(clip)}, {frames} frames, {clip.stat().st_size / 1e6:.1f} MB")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[str, list[tuple[float, float, float | None]]] = {name: [] for name in contenders}
    for rep in range(args.reps):
        if args.quiet_below is not None:
            wait_quiet(args.quiet_below, args.max_wait)
        for name, command in contenders.items():
            runs[name].append(timed(command))
            wall, cpu, others = runs[name][-1]
            shown = "?" if others is None else f"{others:.2f}"
            print(f"  rep {rep + 1}: {name:30} {wall:6.2f} s wall, {cpu:6.2f} s CPU, others used {shown} cores",
                  file=sys.stderr)
    base = runs[baseline]
    print(f"\n{'command':30} {'wall s':>7} {'÷ decode':>8} {'frames/s':>8} {'CPU s':>7} {'CPU ÷':>6} {'cores':>5} {'others':>6}")
    for name, series in runs.items():
        wall = statistics.median(r[0] for r in series)
        cpu = statistics.median(r[1] for r in series)
        ratio = statistics.median(r[0] / b[0] for r, b in zip(series, base))
        cpu_ratio = statistics.median(r[1] / b[1] for r, b in zip(series, base))
        others = [r[2] for r in series if r[2] is not None]
        shown = f"{statistics.median(others):6.2f}" if others else f"{'?':>6}"
        print(f"{name:30} {wall:7.2f} {ratio:8.2f} {frames / wall:8.0f} {cpu:7.2f} {cpu_ratio:6.2f} "
              f"{cpu / wall:5.2f} {shown}")
    print(f"(medians of {args.reps} interleaved repetitions; ÷ = median of per-repetition ratios to the baseline run "
          f"beside it; cores = CPU s / wall s; others = cores used by other processes meanwhile, median)")
    worst = max((r[2] for series in runs.values() for r in series if r[2] is not None), default=None)
    if worst is not None and worst > 0.1:
        print(f"warning: other processes used up to {worst:.2f} cores during these runs: wall ratios are not those of "
              f"an idle machine (rerun with --quiet-below 0.1)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
