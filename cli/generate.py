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
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import artifacts, log
from v2m.cli.common import Force
from v2m.errors import V2MError


def command(
    controls: Annotated[str, typer.Argument(help="A v2m.controls artifact (from encode-tokens), or a v2m.rhythm "
                                                 "artifact (converted on the fly); '-' reads stdin.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The v2m.tokens artifact ('-' = stdout).")] = "-",
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Checkpoint (.safetensors, quantized ones "
                                                 "too); default: presets/default.safetensors.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Require this model backend (e.g. transformer).")] = None,
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
    force: Force = False,
) -> None:
    from v2m.stages.generate import GenerateConfig

    artifacts.check_output(output, force)
    try:
        config = GenerateConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                num_samples=num_samples, bars=bars)
    except ValueError as e:
        raise V2MError(str(e))
    if arrange not in ("auto", "none"):
        raise V2MError(f"--arrange {arrange!r}: expected 'auto' or 'none'")
    if rerank and num_samples < 2:
        raise V2MError("--rerank needs several candidates", "pass --num-samples N with N ≥ 2")
    if prime is not None and not prime.is_file():
        raise V2MError(f"{prime}: no such file")
    raw = artifacts.read_bytes(controls)
    found = artifacts.parse_artifact(raw, controls, ("v2m.controls", "v2m.rhythm"))
    data = generate_artifact(found, raw, controls, config, model=model, backend=backend, kernel=kernel,
                             device=device, rerank=rerank, prime=prime, style=style, arrange=arrange == "auto")
    artifacts.write_artifact(data, output, force)


def resolve_device(device: str) -> str:
    from v2m.models.loading import resolve_device as checked

    return checked(device)


def generate_artifact(found: dict, raw: bytes, name: str, config, *, model, backend, kernel, device,
                      rerank: bool, prime: Path | None, style: str | None = None, arrange: bool = True,
                      loaded=None) -> dict:
    """The v2m.tokens artifact for a controls or rhythm artifact (`loaded`: an already opened (model, vocab))."""
    from v2m.config import to_dict
    from v2m.stages.generate import arrangement_record, generate, open_model, prime_ids_from_midi

    record = arrangement_record(style, arrange, config.seed)  # an unknown style fails before the model loads
    device = resolve_device(device)
    loaded_model, vocab = loaded or open_model(model, backend=backend, kernel=kernel, device=device)
    controls = found["data"]
    if found["format"] == "v2m.rhythm":
        from v2m.stages.video_controls import controls_from_rhythm

        controls = controls_from_rhythm(controls, vocab)
    prime_ids = prime_ids_from_midi(prime.read_bytes(), vocab, str(prime)) if prime is not None else None
    log.info(f"generating {config.bars or len(controls['bars'])} bars × {config.num_samples} sample(s) on {device}")
    data = generate(loaded_model.model, vocab, controls, config, prime_ids=prime_ids, rerank=rerank,
                    compile=device.startswith("cuda"))
    data["arrange"] = record
    if "rerank" in data:
        scores = ", ".join(f"{s:.3f}" for s in data["rerank"]["scores"])
        log.info(f"rerank by onset F-measure: [{scores}] → kept candidate {data['rerank']['chosen']}")
    resolved = {**to_dict(config), "rerank": rerank, "backend": loaded_model.backend, "kernel": kernel,
                "device": device, "model": model_identity(model), "prime": prime.name if prime else None}
    return artifacts.make_artifact("v2m.tokens", data, stage="generate", config=resolved, seed=config.seed,
                                   source=artifacts.source_of(name, data=raw))


def model_identity(model: str | None) -> dict:
    """The checkpoint by name and content hash, so the artifact says exactly which weights made it. A missing
    file or one that is not a v2m model is one line here (its header is read before the whole file is hashed)."""
    from v2m.checkpoint import read_meta
    from v2m.stages.generate import model_path

    path = model_path(model)
    read_meta(path)
    return {"name": path.name, "sha256": artifacts.sha256_file(path)}
