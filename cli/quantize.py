"""Quantize a model: smaller weights, faster CPU/GPU kernels, quality you can measure.

Schemes: w8a8 (int8 weights and per-token int8 activations), w8, w4, w3, w2
(weight-only, per channel or per --group columns, symmetric or --asym), fp8
(E4M3 weights and activations), fp4 (E2M1, group scales) and nvfp4 (E2M1 in
16-element blocks with E4M3 scales and one fp32 scale per tensor).

Methods (combine with '+'): rtn (round to nearest), gptq (error-compensating,
needs --calib), decoupleq (2/3-bit: GPTQ, then alternately the float
scale/zero and the integer codes against the layer-output error, float zero
points; needs --calib), smoothquant (for w8a8/fp8, needs --calib), rotate
(random Hadamard rotation of the residual stream, QuaRot-style; rotate+gptq),
mixed (per-layer widths from measured sensitivity under --budget-bits: the
--scheme is the widest, w8a8 included; --group groups the narrower ones).
`v2m quantize --list` prints which schemes, methods and kernels combine.

The output is a v2m.model safetensors file with packed codes, scales and zero
points; generate, evaluate and run accept it with --kernel auto | reference |
cpu-vnni | cpu-int8 | int-mm | inductor | cuda-int-mm | cuda-fp8 | cuda-int4
(auto picks per layer by CPU ISA / GPU compute capability and logs it).
The group size must divide every quantized layer's input width.

A diffusion checkpoint (train --backend diffusion) takes --scheme w8a8, w6a6 or
w4a8 and --method rtn, gptq or qalora; --calib is then a v2m.controls file or
folder: generate's sampler writes the first 12 bars of each (a first window and
its continuation; --calib-samples windows in all) and every Linear's inputs are
recorded along the trajectory (uniform + normally distributed steps), with
activation ranges per --t-groups group of timesteps (--ranges timestep,
clip-searched), the time-embedding/adaLN path and the output layer kept at int8
weights and float activations, and the roll input's concatenated segments (noisy roll, known roll
and mask, previous estimate) each with its own ranges (--concat). --ranges
single is the naive one-step calibration. --method qalora (EfficientDM) first
fine-tunes low-rank adapters through the quantized weights and activations to
match the float model along its own sampling trajectories (no training data:
the calibration controls only), merges them into the weights, then quantizes
with RTN: for w4a8, where PTQ alone falls short.

Examples:

  v2m quantize model.safetensors -o model.w8a8.safetensors --scheme w8a8 --method smoothquant --calib corpus/

  v2m quantize model.safetensors -o model.w4.safetensors --scheme w4 --group 64 --method gptq --calib corpus/ --act-order

  v2m quantize model.safetensors -o model.w3.safetensors --scheme w3 --group 64 --asym --method rotate+gptq --calib corpus/

  v2m quantize model.safetensors -o model.w2.safetensors --scheme w2 --group 32 --method decoupleq --calib corpus/

  v2m quantize model.safetensors -o model.mix.safetensors --scheme w8a8 --group 64 --method mixed+gptq --budget-bits 6 --calib corpus/

  v2m quantize presets/diffusion.safetensors -o diffusion.w8a8.safetensors --scheme w8a8 --calib controls/

  v2m evaluate --model model.w8a8.safetensors --reference model.safetensors --corpus corpus/ --fail-if "nll_delta>0.01,kl>0.01"

Several at once, gated, with a CI summary: v2m sweep (examples/sweep.toml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import log
from v2m.cli.common import Force


def print_list(value: bool) -> None:
    """--list: the schemes × methods × kernels table, from the code's own checks (stages.quantize.capability_tables)."""
    if not value:
        return
    from rich.table import Table

    from v2m.stages.quantize import capability_tables

    schemes, methods, kernels = capability_tables()
    console = log.console()
    table = Table(title="methods × schemes (✓ combines; --method a+b, --scheme S)", title_justify="left")
    table.add_column("method")
    for name in schemes:
        table.add_column(name, justify="center")
    for method, refusals in methods:
        table.add_row(method, *["✓" if why is None else "·" for why in refusals])
    console.print(table)
    table = Table(title="kernels × schemes (✓ runs it; --kernel K, auto picks per layer)", title_justify="left")
    table.add_column("kernel")
    for name in schemes:
        table.add_column(name, justify="center")
    table.add_column("here")
    for kernel, unavailable, refusals in kernels:
        table.add_row(kernel, *["✓" if why is None else "·" for why in refusals], "yes" if not unavailable else f"no: {unavailable}")
    console.print(table)
    console.print("group sizes must divide each layer's input width; w8a8 and fp8 are per channel, nvfp4 blocks of 16; "
                  "decoupleq stores a float16 zero point per group", markup=False)
    raise typer.Exit(0)


def command(
    model: Annotated[str, typer.Argument(help="Float model checkpoint (.safetensors from v2m train).", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Quantized checkpoint to write.", show_default=False)],
    scheme: Annotated[str, typer.Option("--scheme", "-s", help="w8a8, w8, w4, w3, w2, fp8, fp4 or nvfp4; a diffusion "
                                                              "model: w8a8, w6a6 or w4a8.")] = "w8a8",
    method: Annotated[str, typer.Option("--method", "-m", help="rtn, gptq, decoupleq, smoothquant, rotate, mixed; "
                                                              "combine with '+' (see --list).")] = "rtn",
    calib: Annotated[Optional[str], typer.Option("--calib", help="Calibration corpus folder (v2m encode-tokens -o DIR/).")] = None,
    calib_split: Annotated[str, typer.Option("--calib-split", help="Corpus split to calibrate on.")] = "train",
    calib_samples: Annotated[int, typer.Option("--calib-samples", help="Calibration windows.")] = 32,
    calib_length: Annotated[int, typer.Option("--calib-length", help="Tokens per calibration window (capped by the model).")] = 256,
    group: Annotated[Optional[int], typer.Option("--group", "-g", help="Input columns per scale; 0 = per output channel "
                                                                       "(default: 128 for w4/w3/w2, 32 for fp4, per channel for "
                                                                       "8-bit; the default model's widths 320/832 need 64).",
                                                 show_default=False)] = None,
    asym: Annotated[bool, typer.Option("--asym", help="Asymmetric integer grid (a zero point per group).")] = False,
    alpha: Annotated[float, typer.Option("--alpha", help="SmoothQuant migration strength (0..1).")] = 0.5,
    damp: Annotated[float, typer.Option("--damp", help="GPTQ damping, a fraction of mean(diag H).")] = 0.01,
    act_order: Annotated[bool, typer.Option("--act-order", help="GPTQ: quantize columns by decreasing activation energy.")] = False,
    block: Annotated[int, typer.Option("--block", help="GPTQ: columns per lazy update block.")] = 128,
    budget_bits: Annotated[float, typer.Option("--budget-bits", help="mixed: average stored bits per weight "
                                                                     "(codes + scales + zeros).")] = 4.5,
    rounds: Annotated[int, typer.Option("--rounds", help="decoupleq: float/integer alternations after the GPTQ start.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the rotation and the calibration windows.")] = 0,
    ranges: Annotated[str, typer.Option("--ranges", help="Diffusion: activation ranges: timestep (per timestep group, "
                                                         "clip search), trajectory (one range over the trajectory) or "
                                                         "single (one calibration step: the naive baseline).")] = "timestep",
    act: Annotated[str, typer.Option("--act", help="Diffusion: activations static (calibrated ranges) or dynamic "
                                                   "(per token at run time).")] = "static",
    t_groups: Annotated[int, typer.Option("--t-groups", help="Diffusion: timestep groups with their own ranges.")] = 4,
    calib_steps: Annotated[int, typer.Option("--calib-steps", help="Diffusion: DDIM steps of the calibration runs.")] = 20,
    time_path: Annotated[str, typer.Option("--time-path", help="Diffusion: the time-embedding/adaLN layers: apart "
                                                               "(int8 weights, float activations), scheme (like every "
                                                               "other layer) or auto (apart unless --ranges single).")] = "auto",
    concat: Annotated[str, typer.Option("--concat", help="Diffusion: a concatenated input (the DiT's roll input: noisy "
                                                         "roll, known roll and mask, previous estimate): split (a range "
                                                         "per segment, Q-Diffusion), whole, or auto (split unless "
                                                         "--ranges single).")] = "auto",
    output_layer: Annotated[str, typer.Option("--output-layer", help="Diffusion: the final projection: apart (int8 "
                                                                      "weights, float activations: its input has "
                                                                      "channel outliers), scheme, or auto (apart "
                                                                      "unless --ranges single).")] = "auto",
    qalora_steps: Annotated[int, typer.Option("--qalora-steps", help="Diffusion, --method qalora: fine-tune steps.")] = 150,
    qalora_rank: Annotated[int, typer.Option("--qalora-rank", help="Diffusion, --method qalora: adapter rank.")] = 8,
    qalora_lr: Annotated[float, typer.Option("--qalora-lr", help="Diffusion, --method qalora: Adam's learning rate "
                                                             "(1e-5: the shipped model; 1e-3 made its error rise).")] = 1e-5,
    force: Force = False,
    list_: Annotated[bool, typer.Option("--list", help="Print which schemes, methods and kernels combine, and exit.",
                                        is_eager=True, callback=print_list)] = False,
) -> None:
    from v2m.stages.quantize import CalibrationSource, DiffusionOptions, QuantizeConfig, quantize_checkpoint

    config = QuantizeConfig(scheme=scheme, method=method, group=group, asym=asym, alpha=alpha, damp=damp,
                            act_order=act_order, block=block, budget_bits=budget_bits, rounds=rounds, seed=seed)
    source = CalibrationSource(calib, calib_split, calib_samples, calib_length) if calib is not None else None
    result = quantize_checkpoint(model, output, config, source, force=force,
                                 diffusion=DiffusionOptions(ranges, act, t_groups, calib_steps, time_path,
                                                            qalora_steps, qalora_rank, qalora_lr, concat, output_layer))
    log.info(f"{Path(output).name}: {scheme} {result.method}, {result.layers} layers, "
             f"{result.bytes_after / 1e6:.2f} MB ({result.bytes_after / result.bytes_before:.3f}× the bf16 model) "
             f"in {result.seconds:.1f} s")
