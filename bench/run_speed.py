"""Speed of `v2m run`, stage by stage, and its memory against video length.

1. A 30-second 720p synthetic clip through `run`'s per-video path in this process (the model loaded once,
   timed apart): wall seconds per stage and ÷ the clip's duration (the real-time factor; 0.5 = twice real time),
   plus generation tokens/s.
2. `v2m run` as a subprocess on a short and a long synthetic video (default 1 and 10 minutes): wall time and
   peak resident memory (ru_maxrss of that process alone, from os.wait4). Memory that does not grow with
   length is the claim under test: decoding streams frames, the KV cache is one window, rendering is FluidSynth's.

    python bench/run_speed.py --model presets/default.safetensors [--long 600] [--work DIR] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def make_clip(path: Path, duration: float, width: int, height: int, seed: int = 0) -> None:
    from v2m.samples import SampleSpec, write_video

    if not path.exists():
        started = time.perf_counter()
        write_video(path, SampleSpec(bpm=112.0, duration=duration, width=width, height=height, fps=30.0, seed=seed))
        print(f"made {path.name} ({duration:g} s, {width}x{height}) in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)


def stage_table(args) -> None:
    import torch

    from v2m.stages.run import video as run

    clip = args.work / "clip30_720p.mp4"
    make_clip(clip, 30.0, 1280, 720)
    out = args.work / "speed_out"
    config = run.RunConfig(model=args.model, seed=0, device=args.device)
    engine = run.Engine(config)
    started = time.perf_counter()
    engine.loaded  # noqa: B018  (the one model load of this process, timed apart from the stages)
    load_s = time.perf_counter() - started
    job = run.plan([clip], None, out)[0]
    result = run.process(job, engine, run.fingerprint(config, None), force=True)
    if result.status != "done":
        raise SystemExit(f"run failed: {result.error}")
    tokens = json.loads(job.output("tokens.json").read_text())["data"]["ids"]
    duration = result.duration
    total = result.wall  # mux and evaluate overlap: the stages add up to more than this
    print(f"\n`run` stage by stage, {clip.name} ({duration:.1f} s, 1280x720), {args.device}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print("| stage | seconds | ÷ video duration |")
    print("|---|---|---|")
    for stage, seconds in result.seconds.items():
        print(f"| {stage} | {seconds:.2f} | {seconds / duration:.3f} |")
    print(f"| **total** (wall, model already loaded; mux runs beside evaluate) | {total:.2f} | **{total / duration:.3f}** |")
    print(f"| model load (once per process) | {load_s:.2f} | {load_s / duration:.3f} |")
    print(f"\ngeneration: {len(tokens)} tokens in {result.seconds['generate']:.2f} s = "
          f"{len(tokens) / result.seconds['generate']:.0f} tokens/s (batch 1, forced controls included)")


def run_measured(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) of the process alone, exit code."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
    return wall, usage.ru_maxrss / 1024, proc.returncode


def memory_table(args) -> None:
    """Peak memory of `v2m run` on a short and a long video (each in its own process)."""
    rows = []
    for seconds in (args.short, args.long):
        clip = args.work / f"clip{int(seconds)}s_360p.mp4"
        make_clip(clip, seconds, 640, 360, seed=1)
        out = args.work / f"memory_out_{int(seconds)}"
        command = [sys.executable, "-m", "v2m.cli.main", "run", str(clip), "-o", str(out), "--force",
                   "--device", args.device, *(["--model", args.model] if args.model else [])]
        wall, peak, code = run_measured(command)
        rows.append((seconds, wall, peak, code))
    print(f"\n`v2m run` memory against video length (640x360, one process each, {args.device})")
    print("| video | wall s | wall ÷ duration | peak RSS MiB | exit |")
    print("|---|---|---|---|---|")
    for seconds, wall, peak, code in rows:
        print(f"| {seconds:.0f} s | {wall:.0f} | {wall / seconds:.3f} | {peak:.0f} | {code} |")
    print(f"peak RSS ratio long ÷ short: {rows[1][2] / rows[0][2]:.2f} for {args.long / args.short:g}× the length")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: presets/default.safetensors)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("bench/.work/run_speed"))
    parser.add_argument("--short", type=float, default=60.0, help="seconds of the short memory clip")
    parser.add_argument("--long", type=float, default=600.0, help="seconds of the long memory clip")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-stages", action="store_true")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory runs' subprocesses too
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    if not args.skip_stages:
        stage_table(args)
    if not args.skip_memory:
        memory_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
