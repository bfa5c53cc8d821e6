"""Diffusion-aware PTQ (issue 21): scheme × calibration method × metric, in one run on one machine (CPU).

For each scheme (w8a8, w6a6, w4a8) and each way of choosing activation ranges — `single` (naive: one calibration
step mid-trajectory, absolute ranges, every layer at the scheme), `trajectory` (uniform + normally distributed
steps, one range, time path apart) and `timestep` (ranges per timestep group with the clip search, time path
apart) — the float preset is quantized with `v2m quantize`'s own code path (stages/quantize.py), written to disk,
loaded back (`load_model`, kernels auto) and measured on evaluation controls that differ from the calibration ones:

- v_err: per-step v-prediction error vs float, ||v_q − v_f||² / ||v_f||² along the float model's own sampling of
  the piece (guided prediction, every step of every window, mean over calls and clips);
- note_f1: note-level F1 (step, pitch, role) of the final roll vs the float model's from the same seed and noise;
- statistics (pitch-class entropy, scale and groove consistency, polyphony) of the piece, and whether they lie
  inside the corpus p10–p90 range (bench/diffusion_vs_transformer.py `corpus_range`, from `--rolls`) when given;
- onset_f: all parts' onsets against the video's beats (bench/diffusion_vs_transformer.py `onset_f`);
- size on disk; CPU sampling time per DDIM step (guided, batch 1; median of `--repeats`).

    .venv/bin/python bench/diffusion_ptq.py [--model presets/diffusion.safetensors] [--clips 3] [--calib 4]
        [--schemes w8a8,w6a6,w4a8] [--ranges single,trajectory,timestep] [--rolls ROLLS.safetensors] [--json OUT]
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
from pathlib import Path

import numpy as np
import torch

from v2m.stages.diffusion_eval import STATS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from diffusion_vs_transformer import corpus_range  # noqa: E402

BASE = ROOT / "bench" / "data" / "decode_controls_20s.json"


def variants(n: int, seed: int) -> list[dict]:
    """`n` controls payloads varied from the 20 s base clip: mode, register, tempo class, bar densities, and the
    onset envelope's peaks (some dropped, some added off the beat)."""
    base = json.loads(BASE.read_text())
    base = base.get("data", base)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = copy.deepcopy(base)
        c["mode"] = ["major", "minor"][int(rng.integers(2))]
        c["register"] = ["low", "mid", "high"][int(rng.integers(3))]
        c["tempo_class"] = int(rng.integers(1, 4))
        for bar in c["bars"]:
            bar["density"] = int(np.clip(bar["density"] + rng.integers(-1, 2), 0, 6))
        env = np.asarray(c["rhythm"]["envelope"], np.float64)
        env *= rng.uniform(0.5, 1.5, size=env.shape) * (rng.random(env.shape) > 0.1)
        env = np.clip(env, 0.0, 1.0)  # the controls schema bounds the envelope to 0..1
        c["rhythm"]["envelope"] = env.tolist()
        out.append(c)
    return out


def write_controls(payload: dict, path: Path) -> None:
    """A controls payload as the v2m.controls artifact `v2m quantize --calib` reads."""
    from v2m import artifacts

    artifacts.write_artifact(artifacts.make_artifact("v2m.controls", payload, stage="bench", config={}, seed=0),
                             str(path), True)


def measure(model, fmodel, vocab, clips, settings, reference, args) -> dict:
    from v2m.stages.diffusion_eval import note_f1, note_set, piece, piece_metrics, v_error

    rows = {"v_err": [], "note_f1": [], "onset_f": [], **{k: [] for k in STATS}}
    times = []
    for i, c in enumerate(clips):
        roll, data, _ = piece(model, vocab, c, settings, seed=args.seed + i)
        if fmodel is not model:
            rows["v_err"].append(v_error(model, fmodel, c, vocab.stats, settings.steps, settings.guidance, args.seed + i))
            rows["note_f1"].append(note_f1(note_set(roll), reference[i]))
        else:
            reference.append(note_set(roll))
            rows["v_err"].append(0.0)
            rows["note_f1"].append(1.0)
        m = piece_metrics(data, vocab)
        rows["onset_f"].append(m["onset_f1"])
        for k in STATS:
            if m.get(k) is not None and np.isfinite(m[k]):
                rows[k].append(m[k])
    for _ in range(args.repeats):  # sampling time, first clip
        _, _, seconds = piece(model, vocab, clips[0], settings, seed=args.seed)
        times.append(seconds)
    windows = len(reference_windows(clips[0], model))
    out = {k: float(np.median(v) if k in STATS else np.mean(v)) if v else float("nan") for k, v in rows.items()}
    out["per_clip"] = {k: rows[k] for k in STATS}
    out["ms_per_step"] = 1000 * statistics.median(times) / (settings.steps * windows)
    return out


def range_options(spec: str) -> dict:
    """`--ranges` entry → DiffusionOptions fields: `ranges[+apart|+scheme][+split|+whole][+out-apart|+out-scheme]`
    (the time path, the concatenated roll input, the output layer)."""
    ranges, *modifiers = spec.split("+")
    out = {"ranges": ranges}
    fields = {"apart": ("time_path", "apart"), "scheme": ("time_path", "scheme"), "split": ("concat", "split"),
              "whole": ("concat", "whole"), "out-apart": ("output", "apart"), "out-scheme": ("output", "scheme")}
    for m in modifiers:
        if m not in fields:
            raise SystemExit(f"--ranges {spec}: unknown modifier '{m}' ({', '.join(fields)})")
        out[fields[m][0]] = fields[m][1]
    return out


def reference_windows(controls, model):
    from v2m.stages.generate.diffusion import grid_steps, windows

    bar_step, beats, _ = grid_steps(controls)
    return windows(bar_step, int(beats.sum()) * 4, model.config.window)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "presets" / "diffusion.safetensors"))
    ap.add_argument("--clips", type=int, default=3, help="evaluation clips: variants of the 20 s controls, or the "
                    "first N files of --controls")
    ap.add_argument("--controls", default=None, help="a folder of controls files to evaluate on instead of variants "
                    "(e.g. bench/diffusion_vs_transformer.py's WORK/out-diffusion: 20 synthetic videos' controls)")
    ap.add_argument("--calib", type=int, default=4, help="calibration pieces (controls variants, other seed), each "
                    "a first window and its continuation")
    ap.add_argument("--schemes", default="w8a8,w6a6,w4a8")
    ap.add_argument("--ranges", default="single,trajectory,timestep",
                    help="comma-separated, each with optional modifiers: `single+apart` = the naive calibration "
                    "with the time path apart too, `timestep+whole` = the concatenated roll input not split, "
                    "`timestep+out-scheme` = the output layer at the scheme")
    ap.add_argument("--method", default="rtn", help="weights: rtn, gptq, qalora, mixed+rtn, ... (comma-separated: each)")
    ap.add_argument("--budget-bits", type=float, default=5.0, help="mixed: average stored bits per weight")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps (generate's default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rolls", default=None, help="a roll set: the corpus p10–p90 range of the statistics")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    from v2m.checkpoint import stored_bytes
    from v2m.models.loading import load_model
    from v2m.stages.generate.diffusion import DiffusionSettings
    from v2m.stages.quantize import CalibrationSource, DiffusionOptions, QuantizeConfig, quantize_checkpoint
    from v2m.stages.tokens.vocab import load_tokenizer

    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; model {args.model}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="v2m-dptq-"))
    calib = work / "calib"
    calib.mkdir()
    for i, c in enumerate(variants(args.calib, seed=1000 + args.seed)):
        write_controls(c, calib / f"c{i}.json")
    if args.controls:
        from v2m.stages.quantize_diffusion import read_controls

        clips = read_controls(args.controls)[:args.clips]
    else:
        clips = variants(args.clips, seed=args.seed)
    settings = DiffusionSettings(args.steps)  # the default guidance
    floaded = load_model(args.model)
    vocab = load_tokenizer(floaded.meta["tokenizer"])
    reference: list[set] = []
    results = {"float": {**measure(floaded.model, floaded.model, vocab, clips, settings, reference, args),
                         "bytes": stored_bytes(args.model)}}
    print(f"float: {results['float']}", flush=True)
    methods = args.method.split(",")
    for scheme, ranges, method in [(s, r, m) for s in args.schemes.split(",") for m in methods
                                   for r in args.ranges.split(",")]:
        name = f"{scheme} {ranges}" + (f" {method}" if len(methods) > 1 else "")
        out = work / f"{name.replace(' ', '-')}.safetensors"
        started = time.perf_counter()
        quantize_checkpoint(args.model, str(out), QuantizeConfig(scheme=scheme, method=method, seed=args.seed,
                                                                 budget_bits=args.budget_bits),
                            CalibrationSource(str(calib), samples=2 * args.calib),
                            diffusion=DiffusionOptions(sampler_steps=args.steps, **range_options(ranges)))
        q = load_model(str(out))
        results[name] = {**measure(q.model, floaded.model, vocab, clips, settings, reference, args),
                         "bytes": stored_bytes(out), "quantize_s": time.perf_counter() - started}
        print(f"{name}: {results[name]}", flush=True)
    # per-step time side by side: float and each W8A8 checkpoint alternately (a busy machine slows both alike)
    from v2m.stages.diffusion_eval import step_ms

    side = {}
    for name in [n for n in results if n.startswith("w8a8")][-1:]:
        q = load_model(str(work / (name.replace(" ", "-") + ".safetensors")))
        f, w = [], []
        for _ in range(args.repeats * 3):
            f.append(step_ms(floaded.model, floaded.config.window, floaded.config.n_features))
            w.append(step_ms(q.model, floaded.config.window, floaded.config.n_features))
        side[name] = (statistics.median(f), statistics.median(w))
    span = corpus_range(Path(args.rolls)) if args.rolls else {}
    fms = results["float"]["ms_per_step"]
    print(f"\n{len(clips)} clips, DDIM {args.steps} steps, guidance {settings.guidance:g}, weights {args.method}; "
          f"v_err = ||v_q−v_f||²/||v_f||² per step (mean over clips); statistics: median over clips, `inside` = "
          f"medians inside the corpus p10–p90 / share of clips with all four inside"
          + (f"; corpus p10–p90 from {args.rolls}" if span else ""))
    print("| scheme | ranges | v_err | note F1 vs float | onset F | pc entropy | scale | groove | polyphony "
          "| stats in corpus p10–p90 | MB | ms/step CPU | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        scheme, _, ranges = name.partition(" ")
        inside = "n/a"
        if span:
            per = r["per_clip"]
            every = np.mean([all(span[k][0] <= per[k][i] <= span[k][2] for k in STATS if k in span)
                             for i in range(min(len(per[k]) for k in STATS))])
            inside = (f"{sum(1 for k in STATS if k in span and span[k][0] <= r[k] <= span[k][2])}/"
                      f"{sum(1 for k in STATS if k in span)}, {every:.2f}")
        print(f"| {scheme} | {ranges or '-'} | {r['v_err']:.4f} | {r['note_f1']:.3f} | {r['onset_f']:.3f} | "
              f"{r['pitch_class_entropy']:.3f} | {r['scale_consistency']:.3f} | {r['groove_consistency']:.3f} | "
              f"{r['polyphony']:.2f} | {inside} | {r['bytes'] / 1e6:.2f} | {r['ms_per_step']:.1f} | "
              f"{fms / r['ms_per_step']:.2f}× |")
    for name, (f, w) in side.items():
        print(f"side by side, one guided DDIM step (batch 2 × window), median of {args.repeats * 3} alternating runs: "
              f"float {f:.1f} ms, {name} {w:.1f} ms: {f / w:.2f}×")
    if span:
        print("corpus p10/median/p90: " + ", ".join(f"{k} {v[0]:.3f}/{v[1]:.3f}/{v[2]:.3f}" for k, v in span.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "corpus_range": span}, indent=1))


if __name__ == "__main__":
    main()
