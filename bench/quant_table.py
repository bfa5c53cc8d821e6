"""The quantization table: size, quality and decode speed of each scheme / method against the float model.

    python bench/quant_table.py --model model.safetensors --corpus corpus/             # CPU rows
    python bench/quant_table.py --model model.safetensors --corpus corpus/ --device cuda   # GPU rows (bf16 baseline)

Every row quantizes the same float model (calibration: the corpus' train split), writes the packed
checkpoint, loads it back through `v2m.models.loading.load_model` (kernel `auto`, logged) and measures, on
the same held-out split (test):
- size ratio: stored tensor bytes / the float model's parameters stored as bf16;
- NLL Δ %: relative change of the mean next-token NLL; KL vs float: KL(p_float ‖ p_quant) per token (nats);
- decode tok/s ratio: greedy decode through the static KV cache after a prefill, against the float
  model measured in the same process in back-to-back pairs (median of the pairs' ratios), at batch 1 (CPU: float32
  baseline) or batch 1 and 16 (GPU: bf16 baseline).
Rows whose kernel is `reference` run dequantized weights (size win only); NVFP4 has no GPU kernel
here (Hopper has no FP4 tensor cores), so its GPU row is emulated through the reference kernel.
`--speed-preset small` measures the speed columns on a randomly initialised model of that preset's
architecture instead (speed does not depend on the weights' values), for when --model is a small
stand-in; the header then says so.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CPU_ROWS = ["w8a8/rtn", "w8a8/smoothquant", "w8/rtn", "w4/rtn", "w4/gptq", "w4/rotate+gptq",
            "w3/rtn", "w3/gptq", "w3/rotate+gptq", "w2/rtn", "w2/gptq", "w2/rotate+gptq", "w4/mixed+gptq",
            "fp8/rtn", "fp4/gptq", "nvfp4/gptq"]
GPU_ROWS = ["w8a8/smoothquant", "fp8/rtn", "w4/gptq", "nvfp4/gptq"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--rows", default=None, help="comma-separated scheme/method rows (default: all for the device)")
    p.add_argument("--group", type=int, default=128, help="group size of w4/w3/w2 (must divide the model's widths)")
    p.add_argument("--low-bit-asym", action="store_true", default=True, help="asymmetric grid for w3/w2 (default on)")
    p.add_argument("--budget-bits", type=float, default=3.5)
    p.add_argument("--calib-samples", type=int, default=32)
    p.add_argument("--calib-length", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=32768)
    p.add_argument("--prefill", type=int, default=64)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batches", default=None, help="decode batch sizes (CPU default 1, GPU default 1,16)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--speed-preset", default=None)
    p.add_argument("--no-speed", action="store_true")
    return p.parse_args()


def decode_seconds(model, batch: int, prefill: int, decode: int, vocab: int, device: str) -> float:
    import torch

    from v2m.models.engines.decoder import Decoder

    prompt = torch.randint(0, vocab, (batch, prefill), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        decoder = Decoder(model, batch, prefill + decode + 1)  # eager: on CPU the lean step generate uses
        ids = decoder.prefill(prompt).argmax(-1, keepdim=True)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for step in range(decode):
            ids = decoder.step(ids, prefill + step).argmax(-1, keepdim=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def speed_ratio(quant, base, batch, args, vocab) -> float:
    """Float time / quantized time for the same decode: the median over `rounds` of back-to-back pairs.

    Each pair runs the two models one right after the other (in alternating order), so both see the
    same load on a shared machine; the median ignores the rounds another process disturbed.
    """
    import statistics

    decode_seconds(quant, batch, args.prefill, 4, vocab, args.device)  # warm-up: kernels prepack, allocators
    decode_seconds(base, batch, args.prefill, 4, vocab, args.device)
    ratios = []
    for i in range(args.rounds):
        pair = [(base, "f"), (quant, "q")][:: 1 if i % 2 == 0 else -1]
        t = {tag: decode_seconds(model, batch, args.prefill, args.decode, vocab, args.device) for model, tag in pair}
        ratios.append(t["f"] / t["q"])
    return statistics.median(ratios)


def quantize_row(loaded, row: str, args, calib, folder: str):
    """Quantize a copy of the float model per `row`, save, load back → (LoadedModel, stored bytes)."""
    from v2m.checkpoint import stored_bytes
    from v2m.models.loading import load_model
    from v2m.quant.pipeline import QuantizeConfig, quantize_model
    from v2m.quant.storage import save_quantized

    scheme, method = row.split("/")
    group = args.group if scheme in ("w4", "w3", "w2") else None
    asym = scheme in ("w3", "w2") and args.low_bit_asym
    model = copy.deepcopy(loaded.model)
    config = QuantizeConfig(scheme=scheme, method=method, group=group, asym=asym, budget_bits=args.budget_bits)
    quant = quantize_model(model, config, None if method == "rtn" else calib)  # rtn records no calibration it did not use
    path = os.path.join(folder, row.replace("/", "_") + ".safetensors")
    save_quantized(path, model, loaded, quant, force=True)
    return load_model(path, device=args.device, kernel="auto"), stored_bytes(path), quant


def main() -> None:
    args = parse_args()
    import torch

    from v2m.models.data import read_corpus
    from v2m.models.loading import load_model
    from v2m.quant.linear import quant_linears
    from v2m.stages.evaluate.model_metrics import ModelEvalConfig, nll_and_kl
    from v2m.stages.quantize import CalibrationSource, calibration_windows

    torch.set_num_threads(args.threads)
    rows = args.rows.split(",") if args.rows else (CPU_ROWS if args.device == "cpu" else GPU_ROWS)
    batches = [int(b) for b in (args.batches or ("1" if args.device == "cpu" else "1,16")).split(",")]
    loaded = load_model(args.model, device="cpu")
    corpus = read_corpus(args.corpus)
    split = corpus.load(args.split)
    calib = calibration_windows(CalibrationSource(args.corpus, samples=args.calib_samples, length=args.calib_length),
                                loaded.meta["tokenizer_hash"], loaded.config.max_len, seed=0)
    eval_config = ModelEvalConfig(max_tokens=args.max_tokens, device=args.device)
    float_params = sum(t.numel() for t in loaded.model.state_dict().values() if t.is_floating_point())
    base = copy.deepcopy(loaded.model).to(args.device)
    if args.device == "cuda":
        base = base.to(torch.bfloat16)

    speed_base = speed_loaded = None
    if args.speed_preset and not args.no_speed:
        from v2m.models.config import load_model_preset
        from v2m.models.registry import build_model

        torch.manual_seed(0)
        cfg = load_model_preset(args.speed_preset).model.with_vocab(loaded.config.vocab_size)
        speed_loaded = type(loaded)(model=build_model(cfg).eval(), config=cfg, meta=loaded.meta, backend="transformer",
                                    path=args.model)
        speed_base = copy.deepcopy(speed_loaded.model).to(args.device)

    where = f"{args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else f", {args.threads} thread(s)")
    print(f"# machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {where}")
    print(f"# model: {args.model} ({float_params:,} parameters, d_model {loaded.config.d_model}); corpus {args.corpus} "
          f"split {args.split}; calibration {args.calib_samples} × {calib.ids.shape[1]} tokens of train, sha256 {calib.sha256[:12]}")
    if speed_loaded is not None:
        print(f"# speed columns: random-weight model of preset '{args.speed_preset}' "
              f"(d_model {speed_loaded.config.d_model}, {speed_loaded.config.n_layers} layers), same quantization")
    baseline = "float32" if args.device == "cpu" else "bf16"
    speed_cols = [f"{'CPU' if args.device == 'cpu' else 'GPU'} decode tok/s ratio b{b}" for b in batches]
    print("| scheme / method | kernel | size ratio (vs bf16) | NLL Δ % | KL vs float | " + " | ".join(speed_cols) + " |")
    print("|---|---|---|---|---|" + "---|" * len(speed_cols))
    with torch.inference_mode():
        ref = nll_and_kl(base, split, eval_config, loaded.config.max_len)
    print(f"| {baseline} (NLL {ref['nll']:.4f}) | — | {2.0 if baseline == 'float32' else 1.0:.3f} | 0 | 0 | "
          + " | ".join("1.00×" for _ in batches) + " |", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        for row in rows:
            started = time.perf_counter()
            q, stored, quant = quantize_row(loaded, row, args, calib, folder)
            model = q.model.to(torch.bfloat16) if args.device == "cuda" else q.model
            with torch.inference_mode():
                m = nll_and_kl(model, split, eval_config, loaded.config.max_len, reference=base)
            kernels = sorted({layer.kernel_name for layer in quant_linears(model).values()})
            speeds = []
            for b in batches:
                if args.no_speed:
                    speeds.append("—")
                    continue
                if speed_loaded is not None:
                    sq = copy.deepcopy(speed_loaded)
                    sq.model = copy.deepcopy(speed_loaded.model)
                    from v2m.quant.linear import set_kernels
                    from v2m.quant.pipeline import QuantizeConfig, quantize_model

                    scheme, method = row.split("/")
                    widths = (speed_loaded.config.d_model, speed_loaded.config.d_ff)
                    group = next(g for g in (args.group, 64, 32, 16) if all(w % g == 0 for w in widths)) \
                        if scheme in ("w4", "w3", "w2") else None
                    quantize_model(sq.model, QuantizeConfig(scheme=scheme, method="rtn", group=group))
                    sq.model.to(args.device)
                    set_kernels(sq.model, "auto", log_choice=False)
                    speeds.append(f"{speed_ratio(sq.model, speed_base, b, args, loaded.config.vocab_size):.2f}×")
                else:
                    speeds.append(f"{speed_ratio(model, base, b, args, loaded.config.vocab_size):.2f}×")
            size = stored / (2 * float_params)
            emulated = " (emulated)" if kernels == ["reference"] and row.split("/")[0] in ("nvfp4", "fp4", "fp8") else ""
            print(f"| {row}{emulated} | {','.join(kernels)} | {size:.3f} | {100 * m['nll_delta']:+.2f} | {m['kl']:.4f} | "
                  + " | ".join(speeds) + " |", flush=True)
            print(f"  {row}: {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
