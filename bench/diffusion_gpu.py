"""Diffusion PTQ on the GPU (issue 21): sampling time of the float denoiser vs its W8A8 / W4A8 timestep-aware
checkpoints, per guided DDIM step and for a whole piece, side by side in one process. Needs only the model file
and controls JSON (no media, no ffmpeg, no FluidSynth), and finishes in well under 3 minutes on an H200:

    . scripts/device_env.sh; python3 bench/diffusion_gpu.py

(options: --model presets/diffusion.safetensors --controls bench/data/decode_controls_20s.json --schemes w8a8,w4a8
--method rtn --steps 10 --repeats 30 --piece-repeats 5 --ranges timestep --device cuda; `--device cpu --no-bf16`
runs the same table on the CPU; `--ranges timestep,timestep+whole+out-scheme` adds the layout without the split roll
input and with the output layer quantized, as bench/diffusion_ptq.py names variants.)

What it does: quantizes the float preset on the CPU with `v2m quantize`'s code path (stages/quantize.py:
trajectory calibration on 4 controls variants of bench/diffusion_ptq.py, ranges per timestep group with the clip
search, time path and output layer apart, the roll input split), loads every checkpoint on the device with kernels `auto` (on a GPU: each layer races
its capable kernels and the dequantized bf16 matmul, quant/kernels.py measured_choice) and then, alternating
between the models round by round so that clock and load changes hit all alike:

- step: one guided DDIM step's model call (batch 2 × window: conditional + unconditional), synchronized, median
  of `--repeats` rounds — as the first window of a piece makes it (time path computed) and as every later window
  makes it (the step's time path kept from the first window: models/diffusion.py `TimeSlot`);
- piece: `sample_rolls` (stages/generate/diffusion.py: every window of the controls' piece, `--steps` DDIM steps,
  the default guidance), wall time to the roll on the host, median of `--piece-repeats` rounds;
- note F1 of the piece vs the float32 model's from the same seed and noise (a check that the timed model samples
  the same music; the quality table is bench/diffusion_ptq.py's).

Rows: float32, bf16 (the float model under torch.autocast(bfloat16), the GPU's natural float baseline), and each scheme. Prints the machine
and a markdown table; `--json OUT` writes the numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_inputs(config, device: str):
    from v2m.models.diffusion import CHANNELS, null_affect

    g = torch.Generator().manual_seed(0)
    w = config.window
    x = torch.randn((2, w, CHANNELS), generator=g)
    args = (x, torch.full((2,), 0.5), -torch.ones_like(x), torch.zeros(2, w), torch.rand((2, w, config.n_features), generator=g),
            null_affect(2))
    return [a.to(device) for a in args]


@torch.no_grad()
def time_step(model, args, device: str, dtype, slot=None) -> float:
    """Seconds of one model call (inputs cast to the model's float dtype), synchronized; `slot`: a TimeSlot
    holding the step's time path (filled by the first call), as windows after a piece's first make the call."""
    inputs = [a.to(dtype) if a.is_floating_point() else a for a in args]
    sync(device)
    started = time.perf_counter()
    model(*inputs, **({} if slot is None else {"time_slot": slot}))
    sync(device)
    return time.perf_counter() - started


def sample_piece(model, controls: dict, stats: dict, settings, seed: int, device: str):
    """(roll, seconds) of one whole piece, as `v2m generate --backend diffusion` samples it."""
    from v2m.stages.generate.diffusion import sample_rolls
    from v2m.stages.generate.plan import extend_grid
    from v2m.stages.tokens.structure import plan_structure

    c = extend_grid(copy.deepcopy(controls), len(controls["bars"]))
    c = {**c, "structure": plan_structure(c)}
    sync(device)
    started = time.perf_counter()
    roll = sample_rolls(model, c, stats, settings, seed)[0]
    sync(device)
    return roll, time.perf_counter() - started


class Autocast(torch.nn.Module):
    """The float32 model run under torch.autocast(bfloat16): matmuls in bf16, what a GPU user of the float model
    would turn on (the model's timestep embedding is float32, so casting its weights to bf16 is not an option)."""

    def __init__(self, model, device: str):
        super().__init__()
        self.model, self.config, self.device_type = model, model.config, device.split(":")[0]

    @property
    def out(self):  # sample_rolls reads the output width here
        return self.model.out

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(*args, **kwargs).float()

    def modulation(self, t, affect):  # the sampler's time path of every step in one batch, as the model's own
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model.modulation(t, affect)

    def time_path_per_step(self) -> bool:
        return self.model.time_path_per_step()


def machine(device: str) -> str:
    cpu = f"{platform.machine()} {os.cpu_count()} cores"
    if device.startswith("cuda"):
        return (f"{torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
                f"Python {platform.python_version()}, {cpu}")
    return f"CPU {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "presets" / "diffusion.safetensors"))
    ap.add_argument("--controls", default=str(ROOT / "bench" / "data" / "decode_controls_20s.json"),
                    help="the piece to sample (a v2m.controls file)")
    ap.add_argument("--schemes", default="w8a8,w4a8")
    ap.add_argument("--method", default="rtn", help="weights: rtn or gptq")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps of the piece (generate's default)")
    ap.add_argument("--repeats", type=int, default=30, help="rounds of the per-step timing")
    ap.add_argument("--piece-repeats", type=int, default=5, help="rounds of the whole-piece timing")
    ap.add_argument("--ranges", default="timestep", help="comma-separated quantization variants per scheme, as "
                    "bench/diffusion_ptq.py takes them (e.g. timestep,timestep+whole+out-scheme)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-bf16", action="store_true", help="leave out the bf16 autocast row (slow on a CPU)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run it on the GPU machine, or pass --device cpu")

    from diffusion_ptq import range_options, variants, write_controls

    import v2m.quant  # noqa: F401  (registers the quantized-checkpoint loader)
    from v2m.checkpoint import stored_bytes
    from v2m.models.diffusion import TimeSlot
    from v2m.models.loading import load_model
    from v2m.stages.diffusion_eval import note_f1, note_set
    from v2m.stages.generate.diffusion import DiffusionSettings
    from v2m.stages.quantize import CalibrationSource, DiffusionOptions, QuantizeConfig, quantize_checkpoint
    from v2m.stages.tokens.vocab import load_tokenizer

    print(f"machine: {machine(args.device)}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="v2m-dgpu-"))
    calib = work / "calib"
    calib.mkdir()
    for i, c in enumerate(variants(4, seed=1000)):
        write_controls(c, calib / f"c{i}.json")
    floaded = load_model(args.model, device=args.device)
    models = {"float32": floaded}
    sizes = {"float32": stored_bytes(args.model)}
    if not args.no_bf16:
        models["bf16"] = SimpleNamespace(**{**vars(floaded), "model": Autocast(floaded.model, args.device)})
        sizes["bf16"] = sizes["float32"]
    for scheme, spec in [(s, r) for s in args.schemes.split(",") for r in args.ranges.split(",")]:
        out = work / f"{scheme}-{spec}.safetensors"
        started = time.perf_counter()
        quantize_checkpoint(args.model, str(out), QuantizeConfig(scheme=scheme, method=args.method),
                            CalibrationSource(str(calib), samples=8),
                            diffusion=DiffusionOptions(sampler_steps=10, **range_options(spec)))
        name = f"{scheme} {spec} ({args.method})"
        models[name] = load_model(str(out), device=args.device)
        sizes[name] = stored_bytes(out)
        print(f"{name}: quantized in {time.perf_counter() - started:.1f} s on the CPU", flush=True)
    kernels = {}
    for name, loaded in models.items():
        labels = [m.kernel_label() for m in loaded.model.modules() if hasattr(m, "kernel_label")]
        kernels[name] = ", ".join(f"{k} × {n}" for k, n in Counter(labels).most_common()) or "torch (float)"

    controls = json.loads(Path(args.controls).read_text())
    controls = controls.get("data", controls)
    stats = load_tokenizer(models["float32"].meta["tokenizer"]).stats
    settings = DiffusionSettings(args.steps)  # the default guidance
    inputs = step_inputs(models["float32"].config, args.device)
    dtypes = {name: next(m.model.parameters()).dtype for name, m in models.items()}
    for name, loaded in models.items():  # warm-up: kernel preparation, cuBLAS/cuDNN plans, allocator
        for _ in range(3):
            time_step(loaded.model, inputs, args.device, dtypes[name])
        sample_piece(loaded.model, controls, stats, DiffusionSettings(2), 0, args.device)
    step = {name: [] for name in models}
    reused = {name: [] for name in models}
    slots = {name: TimeSlot() for name in models}
    for name, loaded in models.items():  # the time path of the timed step, as a piece's first window leaves it
        time_step(loaded.model, inputs, args.device, dtypes[name], slots[name])
    for _ in range(args.repeats):
        for name, loaded in models.items():
            step[name].append(time_step(loaded.model, inputs, args.device, dtypes[name]))
            reused[name].append(time_step(loaded.model, inputs, args.device, dtypes[name], slots[name]))
    piece, f1, reference = {name: [] for name in models}, {}, None
    for r in range(args.piece_repeats):
        for name, loaded in models.items():
            roll, seconds = sample_piece(loaded.model, controls, stats, settings, 0, args.device)
            piece[name].append(seconds)
            if r == 0:
                notes = note_set(roll)
                reference = notes if name == "float32" else reference
                f1[name] = note_f1(notes, reference)
    ms = {name: 1000 * statistics.median(v) for name, v in step.items()}
    ms_reused = {name: 1000 * statistics.median(v) for name, v in reused.items()}
    secs = {name: statistics.median(v) for name, v in piece.items()}
    print(f"\n{Path(args.controls).name}: {len(controls['bars'])} bars, DDIM {args.steps} steps, guidance {settings.guidance:g}; step = one guided model "
          f"call (batch 2 × {models['float32'].config.window}), median of {args.repeats}, with the time path computed "
          f"(a piece's first window) and reused (every later window); piece = sample_rolls, median of "
          f"{args.piece_repeats}; models "
          f"alternated round by round")
    bases = ["float32"] + (["bf16"] if "bf16" in models else [])
    ratios = lambda values, name: " | ".join(f"{values[b] / values[name]:.2f}×" for b in bases)  # noqa: E731
    heads = " | ".join(f"× {b}" for b in bases)
    print(f"| model | kernels | MB | ms/step | {heads} | ms/step, time path reused | {heads} | piece s | {heads} "
          "| note F1 vs float32 |")
    print("|---|---|---:|" + ("---:|" + "---:|" * len(bases)) * 3 + "---:|")
    for name in models:
        print(f"| {name} | {kernels[name]} | {sizes[name] / 1e6:.2f} | {ms[name]:.2f} | {ratios(ms, name)} | "
              f"{ms_reused[name]:.2f} | {ratios(ms_reused, name)} | {secs[name]:.3f} | {ratios(secs, name)} | "
              f"{f1[name]:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(args.device), "ms_per_step": ms, "ms_per_step_time_path_reused": ms_reused, "piece_s": secs,
                                               "note_f1": f1, "kernels": kernels, "bytes": sizes}, indent=1))


if __name__ == "__main__":
    main()
