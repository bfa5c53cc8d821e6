"""Generate music for a video: controls in, a v2m.tokens artifact out.

The input is a v2m.controls artifact (encode-tokens) or a v2m.rhythm artifact
(extract-rhythm; converted to controls on the fly with the model's tokenizer).

On the beat: bar i of the music starts on the video's downbeat i and the
tempo map follows its beat times (decode applies it), with the video's meter.
From the picture: each bar's note density follows the onsets of motion, its
loudness the amount of motion, its accents the strong visual beats; a scene
cut starts a new phrase; brightness chooses major/minor and the register.

Examples:

  v2m extract-rhythm clip.mp4 | v2m encode-tokens - | v2m generate - \\
      | v2m decode - -o clip.mid

  v2m generate clip.rhythm.json -o clip.tokens.json --seed 3 --top-p 0.9

  v2m generate clip.controls.json -n 8 --rerank -o best.tokens.json

  v2m generate clip.controls.json --prime theme.mid --model q.safetensors

  v2m generate clip.rhythm.json --model presets/diffusion.safetensors --steps 10 --guidance 3

With a diffusion checkpoint (--backend diffusion) the model writes melody, bass and accompaniment as a piano roll
on the video's beat grid (the arranger then adds drums, and only the roles the model left empty).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import artifacts
from v2m.cli.common import Force


def command(
    controls: Annotated[str, typer.Argument(help="A v2m.controls artifact (from encode-tokens), or a v2m.rhythm "
                                                 "artifact (converted on the fly); '-' reads stdin.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The v2m.tokens artifact ('-' = stdout).")] = "-",
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Checkpoint (.safetensors, quantized ones "
                                                 "too); default: presets/default.safetensors.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Require this model backend: transformer or diffusion.")] = None,
    kernel: Annotated[str, typer.Option(help="Kernel for quantized weights: auto, reference, ...")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when present).")] = "auto",
    temperature: Annotated[float, typer.Option(help="Sampling temperature (> 0); lower is more predictable.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Keep the k likeliest tokens (0 = all).")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling: keep tokens holding this much "
                                                          "probability.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives byte-identical output.")] = 0,
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Candidates decoded as one batch; "
                                              "extra ones go to the artifact's `samples`.")] = 1,
    rerank: Annotated[bool, typer.Option("--rerank", help="Keep the candidate with the best rhythm agreement "
                                          "(onset F-measure vs the video's beats); all scores are recorded.")] = False,
    prime: Annotated[Optional[Path], typer.Option(help="A MIDI theme that opens the piece and stays in the "
                                                      "model's context throughout.")] = None,
    bars: Annotated[Optional[int], typer.Option(help="Number of bars (default: as many as the video has).")] = None,
    style: Annotated[Optional[str], typer.Option(help="Arrangement style for decode/run (a preset name or a "
                                                     ".toml file); default: pop.")] = None,
    arrange: Annotated[str, typer.Option(help="'auto' records the arrangement for decode; 'none' keeps the "
                                              "generated line alone.")] = "auto",
    steps: Annotated[Optional[int], typer.Option(help="Diffusion backend: denoising steps of the DDIM sampler "
                                                    "(default 10; 20 and 50 give the same roll with the "
                                                    "clamping trick).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Diffusion backend: classifier-free guidance weight "
                                                          "(default 3; 1 = none; higher follows the video's rhythm "
                                                          "and controls more closely).")] = None,
    force: Force = False,
) -> None:
    from v2m.stages.generate.artifact import generate_file, sampling_config
    from v2m.stages.generate.diffusion import diffusion_settings

    artifacts.check_output(output, force, inputs=[controls, model, prime, style])
    config = sampling_config(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, num_samples=num_samples,
                             bars=bars)
    data = generate_file(controls, config, model=model, backend=backend, kernel=kernel, device=device, rerank=rerank,
                         prime=prime, style=style, arrange=arrange,
                         diffusion=None if steps is None and guidance is None else diffusion_settings(steps, guidance))
    artifacts.write_artifact(data, output, force)
