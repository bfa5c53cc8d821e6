"""The v2m.tokens artifact of a generation: controls (or a rhythm, converted on the fly) in, the sampled piece out,
with the header saying exactly what made it — the model by content hash, the kernels and decode engine that
actually ran (never "auto"), the sampling settings and seed.
"""

from __future__ import annotations

from pathlib import Path

from v2m import artifacts, log
from v2m.config import to_dict
from v2m.errors import V2MError
from v2m.limits import MAX_BARS
from v2m.models.loading import resolve_device
from v2m.stages.generate.diffusion import DiffusionSettings, diffusion_settings, generate_diffusion
from v2m.stages.generate.sampler import DEFAULT_STYLE, GenerateConfig, arrangement_record, generate, prime_ids_from_midi
from v2m.stages.session import Session, model_identity, open_model
from v2m.stages.tokens.checks import check_controls
from v2m.stages.tokens.structure import bar_beats, check_structure
from v2m.stages.tokens.video_controls import controls_from_rhythm


def generate_artifact(found: dict, raw: bytes, name: str, config: GenerateConfig, *, model: str | None,
                      backend: str | None = None, kernel: str = "auto", device: str = "auto", rerank: bool = False,
                      prime: Path | None = None, style: str | None = None, arrange: bool = True,
                      session: Session | None = None, diffusion: DiffusionSettings | None = None) -> dict:
    """The v2m.tokens artifact for a checked controls or rhythm artifact `found` (its bytes `raw`, from `name`).

    `session`: an already opened model (else `model` is opened on `device`). `diffusion`: the diffusion
    backend's sampler settings (--steps, --guidance; None = its defaults)."""
    if config.bars is not None and config.bars > MAX_BARS:
        raise V2MError(f"--bars {config.bars}: more than the limit of {MAX_BARS} bars", "generate a shorter piece")
    record = arrangement_record(style, arrange, config.seed)  # an unknown style fails before the model loads
    controls = found["data"]
    if found["format"] == "v2m.controls" and controls.get("structure") is not None and config.bars is None:
        # a hand-edited plan that cannot be followed fails before the model loads too, naming file and field
        check_structure(controls["structure"], len(controls["bars"]), bar_beats(controls),
                        where=f"{name}: data.structure")
    device = resolve_device(device)
    identity = model_identity(model, backend)  # a missing or wrong checkpoint is one line before anything loads
    session = session or open_model(model, backend=backend, kernel=kernel, device=device)
    vocab = session.vocab
    if found["format"] == "v2m.rhythm":
        controls = controls_from_rhythm(controls, vocab)
    else:
        check_controls(controls, vocab, name, generating=True)
    if session.loaded.backend == "diffusion":
        check_diffusion_request(rerank, prime)
    log.info(f"generating {config.bars or len(controls['bars'])} bars × {config.num_samples} sample(s) on {device}")
    if session.loaded.backend == "diffusion":
        diffusion = diffusion or diffusion_settings(None, None)
        data = generate_diffusion(session.loaded.model, vocab, controls, diffusion, seed=config.seed,
                                  num_samples=config.num_samples, bars=config.bars)
    else:
        if diffusion is not None:
            log.warn("--steps and --guidance apply to the diffusion backend only; the transformer ignores them")
        prime_ids = prime_ids_from_midi(prime.read_bytes(), vocab, str(prime)) if prime is not None else None
        data = generate(session.loaded.model, vocab, controls, config, prime_ids=prime_ids, rerank=rerank,
                        compile=device.startswith("cuda"), decoders=session.decoders, arrangement=record,
                        style=style or DEFAULT_STYLE)
    data["arrange"] = record
    if "rerank" in data:
        scores = ", ".join(f"{s:.3f}" for s in data["rerank"]["scores"])
        log.info(f"rerank by the beat F-measure heard in each render: [{scores}] → kept candidate "
                 f"{data['rerank']['chosen']}")
    log.debug(f"generate: kernels {session.kernels()}, decode engine {session.engine()}")
    if session.loaded.backend == "diffusion":
        config_dict = {**to_dict(config), **to_dict(diffusion)}
    else:
        config_dict = to_dict(config)
    resolved = {**config_dict, "rerank": rerank, "backend": session.loaded.backend, "kernel": session.kernels(),
                "engine": session.engine(), "device": device, "model": identity,
                "prime": prime.name if prime else None}
    return artifacts.make_artifact("v2m.tokens", data, stage="generate", config=resolved, seed=config.seed,
                                   source=artifacts.source_of(name, data=raw))


def check_diffusion_request(rerank: bool, prime) -> None:
    """What the diffusion backend does not do, as one line each."""
    if rerank:
        raise V2MError("--rerank works with the transformer backend only",
                       "drop --rerank, or generate with a transformer checkpoint")
    if prime is not None:
        raise V2MError("--prime works with the transformer backend only",
                       "drop --prime, or generate with a transformer checkpoint")


def sampling_config(**settings) -> GenerateConfig:
    """GenerateConfig from command-line values; a bad value is one line."""
    try:
        return GenerateConfig(**settings)
    except ValueError as e:
        raise V2MError(str(e))


def generate_file(source: str, config: GenerateConfig, *, model: str | None = None, backend: str | None = None,
                  kernel: str = "auto", device: str = "auto", rerank: bool = False, prime: Path | None = None,
                  style: str | None = None, arrange: str = "auto",
                  diffusion: DiffusionSettings | None = None) -> dict:
    """`v2m generate`: the tokens artifact for the controls or rhythm artifact at `source` ("-": stdin)."""
    if arrange not in ("auto", "none"):
        raise V2MError(f"--arrange {arrange!r}: expected 'auto' or 'none'")
    if rerank and config.num_samples < 2:
        raise V2MError("--rerank needs several candidates", "pass --num-samples N with N ≥ 2")
    if prime is not None and not prime.is_file():
        raise V2MError(f"{prime}: no such file")
    raw = artifacts.read_bytes(source)
    found = artifacts.parse_artifact(raw, source, ("v2m.controls", "v2m.rhythm"))
    return generate_artifact(found, raw, source, config, model=model, backend=backend, kernel=kernel, device=device,
                             rerank=rerank, prime=prime, style=style, arrange=arrange == "auto", diffusion=diffusion)
