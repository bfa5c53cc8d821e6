"""quantize: a float checkpoint → a packed, quantized one (schemes, methods and kernels: v2m.quant).

The stage reads what quantization needs from the files — the float model, and calibration windows from a
token corpus split checked against the model's tokenizer — and hands v2m.quant modules and arrays: quant
itself knows no corpora and no checkpoints' model code (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from v2m import log
from v2m.artifacts import check_output
from v2m.checkpoint import read_meta, stored_bytes
from v2m.errors import V2MError
from v2m.models.data import read_corpus
from v2m.models.loading import load_model
from v2m.quant.calibrate import Calibration, sample_windows
from v2m.quant.formats import make_scheme
from v2m.quant.pipeline import QuantizeConfig, parse_method, quantize_model
from v2m.quant.storage import save_quantized


@dataclass(frozen=True)
class CalibrationSource:
    """Where calibration windows come from: a corpus folder, its split, how many windows of how many tokens."""

    corpus: str
    split: str = "train"
    samples: int = 32
    length: int = 256


@dataclass(frozen=True)
class DiffusionOptions:
    """What only a diffusion checkpoint takes (v2m.quant.timestep): activation ranges, static or dynamic
    activations, timestep groups, the calibration sampler's steps."""

    ranges: str = "timestep"
    act: str = "static"
    groups: int = 4
    sampler_steps: int = 20


@dataclass(frozen=True)
class QuantizeResult:
    method: str
    layers: int
    bytes_before: int  # the float model's tensors as bf16
    bytes_after: int
    seconds: float


def check_request(output: str, config: QuantizeConfig, has_calibration: bool) -> None:
    """Everything that can be refused before a model is read: the output, the flags, the method × scheme."""
    if output == "-":
        raise V2MError("a quantized checkpoint must go to a file", "pass -o FILE.safetensors")
    if not 0.0 <= config.alpha <= 1.0:
        raise V2MError(f"--alpha must be within 0..1, got {config.alpha}")
    if config.damp <= 0 or config.block < 1:
        raise V2MError("--damp must be > 0 and --block ≥ 1")
    parse_method(config.method, make_scheme(config.scheme, config.group, config.asym), has_calibration)


def calibration_windows(source: CalibrationSource, tokenizer_hash: str, max_len: int, seed: int) -> Calibration:
    """Seeded windows of a corpus split, refused when the corpus comes from another tokenizer than the model's."""
    corpus = read_corpus(source.corpus)
    if corpus.tokenizer_hash != tokenizer_hash:
        raise V2MError(f"calibration corpus {source.corpus} comes from another tokenizer "
                       f"(corpus {corpus.tokenizer_hash[:12] or 'none'}, model {tokenizer_hash[:12] or 'none'})",
                       "calibrate on a corpus encoded with the model's tokenizer")
    tokens = corpus.load(source.split).tokens
    return sample_windows(tokens, source.samples, min(source.length, max_len), seed, corpus=source.corpus,
                          split=source.split)


def quantize_checkpoint(model: str, output: str, config: QuantizeConfig, calibration: CalibrationSource | None = None,
                        force: bool = False, diffusion: DiffusionOptions | None = None) -> QuantizeResult:
    """Quantize the float checkpoint `model` into `output` (atomically; an existing file only with `force`).
    A diffusion checkpoint goes to quantize_diffusion (its calibration is controls, `diffusion` its settings)."""
    check_output(output, force, inputs=[model] + ([calibration.corpus] if calibration is not None else []))
    if read_meta(model).get("backend") == "diffusion" and not read_meta(model).get("quant"):
        return _quantize_diffusion(model, output, config, calibration, diffusion, force)
    check_request(output, config, calibration is not None)
    meta = read_meta(model)
    if meta.get("quant"):
        q = meta["quant"]
        raise V2MError(f"{model} is already quantized ({q.get('scheme')}, {q.get('method')})",
                       "quantize the float model it was made from")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    loaded = load_model(model, device="cpu")
    windows = None
    if calibration is not None:
        windows = calibration_windows(calibration, meta["tokenizer_hash"], loaded.config.max_len, config.seed)
        log.info(f"calibration: {calibration.samples} × {windows.ids.shape[1]} tokens from {calibration.corpus} "
                 f"({calibration.split}), sha256 {windows.sha256[:12]}")
    before = sum(2 * t.numel() for t in loaded.model.state_dict().values() if t.is_floating_point())  # as bf16
    quant = quantize_model(loaded.model, config, windows)
    save_quantized(output, loaded.model, loaded, quant, force=force)
    return QuantizeResult(quant["method"], len(quant["layers"]), before, stored_bytes(output),
                          time.perf_counter() - started)


def _quantize_diffusion(model: str, output: str, config: QuantizeConfig, calibration: CalibrationSource | None,
                        options: DiffusionOptions | None, force: bool) -> QuantizeResult:
    from v2m.quant.timestep import DiffusionQuantConfig
    from v2m.stages.quantize_diffusion import quantize_diffusion_model
    from v2m.stages.tokens.vocab import load_tokenizer

    options = options or DiffusionOptions()
    dconfig = DiffusionQuantConfig(scheme=config.scheme, method=config.method, ranges=options.ranges, act=options.act,
                                   groups=options.groups, sampler_steps=options.sampler_steps, seed=config.seed)
    dconfig.check()
    if dconfig.act == "static" and calibration is None:
        raise V2MError("a diffusion model's static activation ranges need calibration conditions",
                       "pass --calib CONTROLS (a v2m.controls file or folder), or --act dynamic")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    loaded = load_model(model, device="cpu")
    before = sum(2 * t.numel() for t in loaded.model.state_dict().values() if t.is_floating_point())  # as bf16
    if calibration is None:  # dynamic activations, RTN weights: no data needed, but the metadata is the same
        from v2m.quant.timestep import quantize_diffusion

        quant = quantize_diffusion(loaded.model, dconfig, None, {})
    else:
        quant = quantize_diffusion_model(loaded, dconfig, calibration.corpus, calibration.samples,
                                         load_tokenizer(loaded.meta["tokenizer"]).stats)
    save_quantized(output, loaded.model, loaded, quant, force=force)
    return QuantizeResult(quant["method"], len(quant["layers"]), before, stored_bytes(output),
                          time.perf_counter() - started)
