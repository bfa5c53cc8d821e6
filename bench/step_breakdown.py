"""Where a CPU decode step's time goes: the one-call C step (models/engines/native.py) against the per-layer step, and the
one-call step with one part removed at a time (its int8/fp32 products, attention, the logits).

    .venv/bin/python bench/step_breakdown.py [--model presets/default.safetensors] [--rounds 15]

Each variant decodes positions --start .. --start + --steps through the plan directly (no sampling, no Python loop
around it beyond the call), rounds interleaved; the table gives medians in µs per step. The "without X" variants are
built from the same C source with that part compiled out, so "full − without X" is X's share.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

REMOVE = {
    "without the W8A8 products": ("        m->gemm(x, B, m->k, m->w, m->comp, m->scale, m->bias, m->n, y, xu, xs);\n"
                                  "        return;", "        memset(y, 0, B * m->n * sizeof(float));\n        return;"),
    "without the fp32 products": ("    f32_gemm(x, B, m->k, (const float *)m->w, m->bias, m->n, y);",
                                  "    memset(y, 0, B * m->n * sizeof(float));"),
    "without attention": ("                v2m_rope_attend(h + r * 3 * C,", "                if (0) v2m_rope_attend(h + r * 3 * C,"),
    "without the logits": ("    matmul(&p->head, normed, B, logits, xu, xs);\n    return 0;", "    return 0;"),
}


def variant(name: str, patch: tuple[str, str] | None, folder: Path):
    """v2m_forward compiled from the step library's C (models/engines/csrc/decode_step.c) with `patch` applied
    (None: as shipped)."""
    from v2m.c_build import build
    from v2m.models.engines import native

    source = native.SOURCES[0].read_text()
    if patch is not None:
        assert patch[0] in source, f"the C source changed: update REMOVE[{name!r}]"
        source = source.replace(*patch)
    path = folder / f"breakdown-{len(list(folder.iterdir()))}.c"
    path.write_text(source)
    lib = build("v2m-breakdown", (path,), tuple(native.FLAGS), ("-lm",))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.v2m_forward.argtypes = [ctypes.POINTER(native.Plan), p, i64, i64, i64, p, p]
    lib.v2m_forward.restype = ctypes.c_int
    return lib.v2m_forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "presets" / "default.safetensors"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--start", type=int, default=16)
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args()

    from v2m.models.engines.native import NativeStep, step_library
    from v2m.models.loading import load_model
    from v2m.quant import vnni
    from v2m.quant.linear import set_kernels
    from v2m.quant.pipeline import QuantizeConfig, quantize_model

    if step_library() is None or vnni.unavailable() is not None:
        raise SystemExit("needs a CPU with AVX-512 VNNI and a C compiler")
    torch.set_num_threads(1)
    model = load_model(args.model, device="cpu").model
    quantized = copy.deepcopy(model)
    quantize_model(quantized, QuantizeConfig(scheme="w8a8", method="rtn"), None)
    set_kernels(quantized, "cpu-vnni", log_choice=False)
    span = args.start + args.steps
    runs = {}  # name → (callable one step at pos)
    sources = Path(tempfile.mkdtemp(prefix="v2m-breakdown-"))
    for label, m in (("fp32", model), ("W8A8", quantized)):
        per_layer = NativeStep.build(m, m.new_cache(1, span), one_call=False)
        runs[f"{label}: per layer (products between C helpers)"] = per_layer
        one = NativeStep.build(m, m.new_cache(1, span)).plan
        runs[f"{label}: one call"] = one
        removable = [k for k in REMOVE if ("W8A8" in k) == (label == "W8A8") or "products" not in k]
        for name in removable:
            cut = NativeStep.build(m, m.new_cache(1, span)).plan
            cut.fn = variant(name, REMOVE[name], sources)
            runs[f"{label}: one call {name}"] = cut
    ids = torch.tensor([[5]])
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, step in runs.items():
                started = time.perf_counter()
                for pos in range(args.start, span):
                    step(ids, pos)
                times[name].append((time.perf_counter() - started) / args.steps * 1e6)
    print(f"machine: {platform.platform()}, {platform.machine()}, torch {torch.__version__}, 1 thread; "
          f"model {Path(args.model).name}; positions {args.start}..{span - 1}; medians of {args.rounds} interleaved rounds\n")
    print("| variant | µs per step |\n|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):,.1f} |")


if __name__ == "__main__":
    main()
