"""Wall time of `v2m generate` as a user runs it, on the GPU machine (issue 20): the diffusion backend for a 30 s
clip and for a 4 min 45 s piece (DiffRhythm's anchor: 4m45s of audio in ~10 s on a GPU), the transformer for the
same two lengths, each on CUDA and on that machine's CPU; then where the time goes (one process, phases timed
with CUDA synchronised) and whether the same seed gives byte-identical tokens on CUDA.

Run on the GPU machine, from the repository root (it has no ffmpeg and no FluidSynth: only `generate` is timed;
MidiTok and symusic come as carried wheels in .whl/, as for scripts/train_diffusion.sh):

    . scripts/device_env.sh; PYTHONUNBUFFERED=1 python3 bench/generate_wall_gpu.py      (device run: carry [".whl"])

(~3.5 min with the default --budget 220; the tree needs nothing git ignores but .whl/: the model files are in
presets/, the controls in bench/data/.)

Options: --budget S (default 220: rows that would start after S seconds are skipped and say so; each process is
also stopped at what is left), --repeats N (CUDA rows; default 3, the median reported), --no-cpu, --steps N
(default: generate's own default), --controls FILE (default bench/data/clip30.controls.json: a 30.0 s clip's
controls, 100 BPM 4/4, 14 bars; 119 bars of it = 285 s = 4m45s).

Every row is one `python -m v2m generate CONTROLS --model M --device D --seed 0 -o OUT --force [--bars 119]`
process, timed from its start to its exit (interpreter, imports, model load, CUDA context, sampling, writing): what
a user waits for. The table is printed as it fills, then the phases and the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANCHOR_SECONDS = 285.0  # 4 min 45 s


def run_generate(args, model: str, device: str, bars: int | None, out: Path, timeout: float) -> tuple[float, str]:
    """One `v2m generate` process → (wall seconds, error line or '')."""
    command = [sys.executable, "-m", "v2m", "generate", str(args.controls), "--model", model, "--device", device,
               "--seed", "0", "-o", str(out), "--force"]
    if bars:
        command += ["--bars", str(bars)]
    if args.steps and "diffusion" in model:
        command += ["--steps", str(args.steps)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started, f"stopped after {timeout:.0f} s"
    seconds = time.perf_counter() - started
    if done.returncode:
        return seconds, (done.stderr.strip().splitlines() or ["exit %d" % done.returncode])[-1]
    return seconds, ""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def phases(controls_path: str, model: str, device: str, bars: int, steps: int | None) -> None:
    """In one process: import, model load, then generate_diffusion for the clip and for `bars` bars, twice each
    (the first pays CUDA's warm-up), with the sampling timed apart (CUDA synchronised). Prints JSON."""
    t0 = time.perf_counter()
    import torch

    from v2m.stages.generate import diffusion as gd
    from v2m.stages.session import open_model
    out = {"import_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    session = open_model(model, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    out["load_s"] = time.perf_counter() - t0
    out["device_name"] = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    out["torch"] = torch.__version__
    out["threads"] = torch.get_num_threads()
    controls = json.loads(Path(controls_path).read_text())["data"]
    settings = gd.diffusion_settings(steps, None)
    out["steps"], out["guidance"] = settings.steps, settings.guidance
    sampled = {"s": 0.0}
    original = gd.sample_rolls

    def timed_sample_rolls(*a, **k):  # the denoising alone, synchronised
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        result = original(*a, **k)
        if device == "cuda":
            torch.cuda.synchronize()
        sampled["s"] += time.perf_counter() - t
        return result

    gd.sample_rolls = timed_sample_rolls
    for label, n in (("clip", None), (f"{bars} bars", bars)):
        for attempt in ("first", "again"):
            sampled["s"] = 0.0
            t = time.perf_counter()
            data = gd.generate_diffusion(session.loaded.model, session.vocab, json.loads(json.dumps(controls)),
                                         settings, seed=0, bars=n)
            total = time.perf_counter() - t
            out[f"{label} {attempt}"] = {"total_s": total, "sampling_s": sampled["s"],
                                         "windows": data["diffusion"]["windows"], "bars": len(data["controls"]["bars"])}
    print(json.dumps(out))


def phase_report_of(args, bars: int, timeout: float) -> str:
    """The phases table (run first, printed last): one child process on the accelerator."""
    lines = [f"\n## where the diffusion backend's time goes on {args.device} (one process; generate_diffusion twice "
             "per length: the first pays the warm-up)"]
    try:
        done = subprocess.run([sys.executable, __file__, "--phases", str(args.controls), args.diffusion,
                               args.device, str(bars), str(args.steps or 0)],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "\n".join(lines + [f"phases: stopped after {timeout:.0f} s"])
    if done.returncode:
        return "\n".join(lines + ["phases failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]])
    p = json.loads(done.stdout.strip().splitlines()[-1])
    lines += [f"\n{p['device_name']}, torch {p['torch']}, {p['threads']} CPU threads; steps {p['steps']}, "
              f"guidance {p['guidance']}; import {p['import_s']:.2f} s, model load {p['load_s']:.2f} s",
              "\n| piece | call | generate_diffusion s | of it denoising s | windows |", "|---|---|---:|---:|---:|"]
    for key, v in p.items():
        if isinstance(v, dict):
            piece, call = key.rsplit(" ", 1)
            lines.append(f"| {piece} | {call} | {v['total_s']:.2f} | {v['sampling_s']:.2f} | {v['windows']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controls", type=Path, default=ROOT / "bench" / "data" / "clip30.controls.json")
    parser.add_argument("--diffusion", default=str(ROOT / "presets" / "diffusion.safetensors"))
    parser.add_argument("--transformer", default=str(ROOT / "presets" / "default.safetensors"))
    parser.add_argument("--budget", type=float, default=220.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--device", default="cuda", help="the accelerator's device name (cuda)")
    parser.add_argument("--phases", nargs=5, metavar=("CONTROLS", "MODEL", "DEVICE", "BARS", "STEPS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases:
        c, m, d, b, s = args.phases
        phases(c, m, d, int(b), int(s) or None)
        return
    started = time.perf_counter()
    controls = json.loads(args.controls.read_text())["data"]
    beat = statistics.median(b - a for a, b in zip(controls["beat_times"], controls["beat_times"][1:]))
    bars = round(ANCHOR_SECONDS / (beat * int(controls["meter"])))
    print(f"# generate_wall_gpu — {platform.node()}, {platform.platform()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}; controls {args.controls.name} ({controls.get('duration')} s, "
          f"{60 / beat:.0f} BPM, {len(controls['bars'])} bars); long piece {bars} bars = {bars * beat * 4:.0f} s",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="v2m-gpu-"))

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    floor_started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, v2m.cli.main"], cwd=ROOT, capture_output=True)
    floor = time.perf_counter() - floor_started
    print(f"\nprocess floor (python -c 'import torch, v2m.cli.main'): {floor:.2f} s", flush=True)

    phase_report = phase_report_of(args, bars, min(60.0, left()))  # first: a later row may run out of budget
    rows = [("diffusion", args.diffusion, args.device, None, args.repeats),
            ("diffusion", args.diffusion, args.device, bars, args.repeats),
            ("transformer", args.transformer, args.device, bars, 1),
            ("transformer", args.transformer, args.device, None, 1)]
    if not args.no_cpu:
        rows += [("diffusion", args.diffusion, "cpu", None, 1), ("diffusion", args.diffusion, "cpu", bars, 1),
                 ("transformer", args.transformer, "cpu", None, 1), ("transformer", args.transformer, "cpu", bars, 1)]
    print("\n| backend | device | piece | wall s (median) | runs | music s per wall s | steps | windows | "
          "same seed → same bytes | note |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|---|", flush=True)
    for backend, model, device, n, repeats in rows:
        piece = f"4m45s ({n} bars)" if n else f"30 s clip ({len(controls['bars'])} bars)"
        music = n * beat * 4 if n else float(controls["duration"])
        times, hashes, note = [], [], ""
        for r in range(repeats):
            if left() < 5:
                note = f"skipped after {len(times)} runs: the {args.budget:.0f} s budget is spent"
                break
            out = work / f"{backend}-{device}-{n or 'clip'}-{r}.json"
            seconds, error = run_generate(args, model, device, n, out, left())
            if error:
                note = error[:120]
                break
            times.append(seconds)
            hashes.append(digest(out))
            last = out
        steps = windows = "—"
        if times:
            data = json.loads(last.read_text())["data"]
            steps = str(data.get("diffusion", {}).get("steps", "—"))
            windows = str(data.get("diffusion", {}).get("windows", "—"))
        wall = f"{statistics.median(times):.2f}" if times else "—"
        pace = f"{music / statistics.median(times):.1f}" if times else "—"
        same = ("yes" if len(set(hashes)) == 1 else "NO") if len(hashes) > 1 else "—"
        print(f"| {backend} | {device} | {piece} | {wall} | {len(times)} | {pace} | {steps} | {windows} | {same} | "
              f"{note} |", flush=True)

    print(phase_report)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; outputs in {work}")


if __name__ == "__main__":
    main()
