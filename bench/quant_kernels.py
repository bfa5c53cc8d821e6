"""Quantized Linear kernels against float, measured side by side on this machine.

    python bench/quant_kernels.py                     # CPU: the candidates for the CPU int8 path
    python bench/quant_kernels.py --device cuda       # GPU: int8 (_int_mm), FP8 (_scaled_mm), int4 (tinygemm) vs bf16

Shapes are the default model's Linear layers (presets/models/small.toml: d_model 320, d_ff 832,
SwiGLU): qkv 320→960, out 320→320, up 320→1664, down 832→320 (--d384: the planned 384/1024 model's; --shape
768,2048: a ~100 M-parameter model's). Rows = tokens per call: 1 is a
decode step, 16 a batched decode step, 512 a prefill. Timings are interleaved (every candidate
once per round, best of all rounds), so a busy machine slows all of them alike. Printed: time per
call of float and each candidate's speed-up over float (> 1 = faster). CPU candidates that are
not kernels of the registry (fbgemm on a whole batch = per-tensor activation scale, oneDNN engine,
PyTorch's weight-only int8/int4 CPU ops) are measured too, to show why the registry has what it has.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SHAPES = {"qkv": (320, 960), "out": (320, 320), "up": (320, 1664), "down": (832, 320)}
SHAPES_384 = {"qkv": (384, 1152), "out": (384, 384), "up": (384, 2048), "down": (1024, 384)}  # the planned d 384 model


def graphed(candidates: dict, calls: int) -> dict:
    """Each candidate as one replay of a CUDA graph of `calls` calls (what the decode engine sees: no launch
    overhead); best_times then divides by `calls` once more, so pass calls=1 to it."""
    from v2m.quant.kernels import graph_of

    return {name: graph_of(fn, calls) for name, fn in candidates.items()}


def best_times(candidates: dict, rounds: int, calls: int) -> dict:
    best = {name: float("inf") for name in candidates}
    for fn in candidates.values():  # warm-up: compilation, prepacking, allocator
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in candidates.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            best[name] = min(best[name], (time.perf_counter() - t0) / calls)
    return best


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cpu_candidates(k: int, n: int, rows: int, with_inductor: bool) -> dict:
    import torch

    from v2m.quant.formats import make_scheme, quantize_tensor
    from v2m.quant.kernels import KERNELS
    from v2m.quant.linear import QuantLinear

    torch.manual_seed(0)
    weight, x = torch.randn(n, k) * 0.05, torch.randn(rows, k)
    w8a8 = QuantLinear.from_qtensor(quantize_tensor(weight, make_scheme("w8a8")), None)
    float_layer = torch.nn.Linear(k, n, bias=False)
    float_layer.weight.data.copy_(weight)
    out = {"float32": lambda: float_layer(x)}  # through nn.Module, as the quantized layers are
    vnni = () if KERNELS.get("cpu-vnni")().unavailable(torch.device("cpu")) else ("cpu-vnni",)
    for kernel in vnni + ("cpu-int8", "int-mm") + (("inductor",) if with_inductor else ()):
        layer = QuantLinear.from_qtensor(quantize_tensor(weight, make_scheme("w8a8")), None)
        layer.set_kernel(kernel)
        out[kernel] = (lambda layer: lambda: layer(x))(layer)
    # candidates outside the registry
    codes, scale = (w8a8.packed.to(torch.int16) - 128).to(torch.int8), w8a8.scale.float().reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(codes, scale.double(), torch.zeros(n, dtype=torch.long), 0)
        for engine in ("x86", "onednn"):
            torch.backends.quantized.engine = engine
            packed = torch.ops.quantized.linear_prepack(qweight, None)
            out[f"{engine} dynamic (per-tensor act)"] = (lambda p: lambda: torch.ops.quantized.linear_dynamic(x, p, False))(packed)
    torch.backends.quantized.engine = "x86"
    out["_weight_int8pack_mm (w8 weight-only)"] = lambda: torch._weight_int8pack_mm(x, codes, scale)
    try:
        w4 = quantize_tensor(weight, make_scheme("w4", 64, asym=True))
        from v2m.quant.formats import unpack

        q4 = unpack(w4.packed, 4, k).to(torch.int32)
        packed4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q4, 1)
        s4, z4 = w4.scale.float(), w4.zero.float()
        scales_and_zeros = torch.stack([s4.t(), ((8 - z4) * s4).t()], -1).contiguous()
        out["_weight_int4pack_mm_for_cpu (w4 g64)"] = lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed4, 64, scales_and_zeros)
    except (RuntimeError, AttributeError) as e:  # the op's packing layout changes between PyTorch versions
        print(f"int4 CPU op unavailable: {e}", file=sys.stderr)
    return out


def cuda_candidates(k: int, n: int, rows: int) -> dict:
    import torch

    from v2m.quant.formats import make_scheme, quantize_tensor
    from v2m.quant.linear import QuantLinear

    torch.manual_seed(0)
    weight = torch.randn(n, k, device="cuda") * 0.05
    x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
    float_layer = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    float_layer.weight.data.copy_(weight)
    out = {"bf16": lambda: float_layer(x)}  # through nn.Module, as the quantized layers are
    for scheme, group, kernel in (("w8a8", None, "cuda-int-mm"), ("w8a8", None, "dequant-bf16"),
                                  ("fp8", None, "cuda-fp8"), ("w4", 64, "cuda-int4"), ("w4", 64, "dequant-bf16"),
                                  ("nvfp4", None, "reference")):
        layer = QuantLinear.from_qtensor(quantize_tensor(weight.cpu(), make_scheme(scheme, group, scheme == "w4")), None).cuda()
        try:
            layer.set_kernel(kernel)
            layer(x)
        except Exception as e:  # report and go on: one missing kernel must not hide the others
            print(f"{kernel}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        out[f"{kernel} ({scheme})"] = (lambda layer: lambda: layer(x))(layer)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--rows", default="1,16,512", help="tokens per call, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: a shared machine gives steadier numbers)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-inductor", action="store_true", help="skip the Inductor candidate (it compiles per shape)")
    parser.add_argument("--d384", action="store_true", help="the layers of a d_model 384, d_ff 1024 model instead")
    parser.add_argument("--shape", default=None, help="D,FF: the layers of a d_model D, SwiGLU d_ff FF model instead "
                                                      "(768,2048 with 12 layers is a ~100 M-parameter model)")
    parser.add_argument("--graph", action="store_true", help="CUDA: time each candidate inside a CUDA graph (as the "
                                                             "decode engine runs it: kernel time, no launch overhead)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"# machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, threads {args.threads}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
          + (f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    header_done = False
    for rows in (int(r) for r in args.rows.split(",")):
        shapes = SHAPES_384 if args.d384 else SHAPES
        if args.shape:
            d, ff = (int(v) for v in args.shape.split(","))
            shapes = {"qkv": (d, 3 * d), "out": (d, d), "up": (d, 2 * ff), "down": (ff, d)}
        for layer, (k, n) in shapes.items():
            cands = cpu_candidates(k, n, rows, not args.no_inductor) if args.device == "cpu" else cuda_candidates(k, n, rows)
            calls = max(3, int(2000 / max(rows, 1))) if args.device == "cpu" else 200
            if args.graph:
                t = {name: v / calls for name, v in best_times(graphed(cands, calls), args.rounds, 1).items()}
            else:
                t = best_times(cands, args.rounds, calls)
            base_name = next(iter(cands))
            if not header_done:
                names = list(cands)[1:]
                print("| layer (in→out) | rows | " + base_name + " µs | " + " | ".join(names) + " |")
                print("|---|---|---|" + "---|" * len(names))
                header_done = True
            ratios = " | ".join(f"{t[base_name] / t[nm]:.2f}×" for nm in list(cands)[1:])
            print(f"| {layer} ({k}→{n}) | {rows} | {t[base_name] * 1e6:.1f} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
