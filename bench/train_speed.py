"""Training throughput: tokens/s and model FLOPs utilisation of one training step (forward, backward, AdamW).

    .venv/bin/python bench/train_speed.py --preset debug --batch 8 --context 256            # CPU
    python bench/train_speed.py --device cuda --preset small                                # GPU: eager vs torch.compile

FLOPs per token = 6·N + 12·layers·d_model·context (PaLM appendix B; N counts the tied embedding once,
it is used as the output projection). MFU = achieved FLOP/s ÷ the GPU's dense bf16 peak (models/train.py
PEAK_FLOPS). Random tokens: throughput does not depend on the data. Same step as models/train.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=0, help="default: the preset's")
    parser.add_argument("--context", type=int, default=0, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()

    from v2m.models.config import load_model_preset
    from v2m.models.registry import build_model
    from v2m.models.train import PEAK_FLOPS, peak_flops

    device = torch.device(args.device)
    preset = load_model_preset(args.preset)
    batch, context = args.batch or preset.train.batch, args.context or preset.train.context
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    configs = [("eager", False)] + ([("torch.compile", True)] if device.type == "cuda" and not args.no_compile else [])
    for name, compiled in configs:
        torch.manual_seed(0)
        model = build_model(preset.model.with_vocab(args.vocab)).to(device).train()
        n = model.num_params()
        flops_per_token = 6 * n + 12 * model.config.n_layers * model.config.d_model * context
        step_model = torch.compile(model) if compiled else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
        x = torch.randint(0, args.vocab, (batch, context + 1), device=device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = step_model(x[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, args.vocab), x[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        start = time.perf_counter()
        for _ in range(3):  # warm-up (and compilation)
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        warm = time.perf_counter() - start
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        rate = batch * context / statistics.median(times)
        peak = peak_flops(device)
        rows.append((name, rate, flops_per_token * rate, peak, warm))

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"preset {args.preset}: {n / 1e6:.2f} M parameters (vocab {args.vocab}), batch {batch} × {context} tokens, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}; median of {args.steps} steps")
    print()
    print(f"| {'step':<14} | {'tokens/s':>12} | {'TFLOP/s':>8} | {'MFU':>6} | {'× eager':>7} | warm-up s |")
    print(f"|{'-' * 16}|{'-' * 14}|{'-' * 10}|{'-' * 8}|{'-' * 9}|----------|")
    for name, rate, flops, peak, warm in rows:
        mfu = f"{flops / peak:.1%}" if peak else "n/a"
        print(f"| {name:<14} | {rate:>12,.0f} | {flops / 1e12:>8.3f} | {mfu:>6} | {rate / rows[0][1]:>7.2f} | {warm:>8.1f} |")
    if device.type == "cuda" and rows[0][3] is None:
        print(f"(no peak known for this GPU; known: {', '.join(PEAK_FLOPS)})")


if __name__ == "__main__":
    main()
