"""Train a music model on a token corpus → model.safetensors (plus a resumable checkpoint, a JSON log and a model card).

The corpus is a folder made by `v2m encode-tokens` (index.json + shards). Progress (loss, validation NLL, tokens/s, MFU on GPU, ETA) goes to stderr.

Every --ckpt-every steps a resumable checkpoint MODEL.ckpt.safetensors is written atomically; a run stopped for any reason continues with --resume. The same --seed on CPU gives identical weights. Beside the model: MODEL.train.json (the log) and MODEL.md (a model card).

Examples:

  v2m train corpus/ -o model.safetensors --preset debug --steps 200

  v2m train corpus/ -o model.safetensors --preset small --device cuda --max-minutes 7 --save-dtype bfloat16

  v2m train corpus/ -o model.safetensors --resume model.ckpt.safetensors

  torchrun --nproc_per_node 2 -m v2m train corpus/ -o model.safetensors   # several GPUs (DDP)

  v2m encode-tokens --source music21 --rolls -o rolls.safetensors      # the diffusion backend's roll set
  v2m train rolls.safetensors --backend diffusion -o diffusion.safetensors --max-minutes 6 --save-dtype bfloat16
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from v2m.cli.common import Force


def command(
    corpus: Annotated[str, typer.Argument(help="Corpus folder (index.json + shards) from `v2m encode-tokens`.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The trained model (.safetensors).")],
    preset: Annotated[Optional[str], typer.Option(help="Model+training preset: debug, small, base (transformer), "
                                                       "diffusion, diffusion-debug (diffusion), or a .toml path "
                                                       "[default: small, or diffusion].")] = None,
    backend: Annotated[str, typer.Option(help="transformer (CORPUS is a token corpus folder) or diffusion (CORPUS "
                                              "is a roll set from `v2m encode-tokens --rolls`).")] = "transformer",
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps (default: the preset's).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Global batch in sequences.")] = None,
    context: Annotated[Optional[int], typer.Option(help="Training window in tokens.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for initialisation, batches and dropout.")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Steps between validation NLL measurements.")] = None,
    ckpt_every: Annotated[Optional[int], typer.Option(help="Steps between resumable checkpoints.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a run from its .ckpt.safetensors.")] = None,
    init: Annotated[Optional[str], typer.Option(help="Fine-tune: start from this model's weights.")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Where the resumable checkpoint goes "
                                                           "(default: MODEL.ckpt.safetensors beside the model).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    max_minutes: Annotated[Optional[float], typer.Option(help="Stop cleanly after this many minutes of training.")] = None,
    save_dtype: Annotated[str, typer.Option(help="dtype of the saved weights: float32, bfloat16, float16.")] = "float32",
    compile: Annotated[Optional[str], typer.Option(help="torch.compile the training step: auto (on CUDA), on, off.")] = None,
    force: Force = False,
) -> None:
    from v2m.stages.train import train_model

    if backend == "diffusion":
        from v2m.stages.train import train_diffusion_model

        overrides = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "eval_every": eval_every}
        train_diffusion_model(corpus, output, preset=preset or "diffusion", overrides=overrides, device=device,
                              max_minutes=max_minutes, save_dtype=save_dtype, force=force,
                              ignored={"--context": context, "--resume": resume, "--init": init,
                                       "--checkpoint": checkpoint, "--ckpt-every": ckpt_every, "--compile": compile})
        return
    if backend != "transformer":
        from v2m.errors import V2MError

        raise V2MError(f"--backend {backend!r}: expected transformer or diffusion")
    preset = preset or "small"

    overrides = {"steps": steps, "batch": batch, "context": context, "lr": lr, "seed": seed,
                 "eval_every": eval_every, "ckpt_every": ckpt_every, "compile": compile}
    train_model(corpus, output, preset=preset, overrides=overrides, resume=resume, init=init, checkpoint=checkpoint,
                device=device, max_minutes=max_minutes, save_dtype=save_dtype, force=force)
