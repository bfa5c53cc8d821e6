"""quantize: a float checkpoint → a packed, quantized one (schemes, methods and kernels: v2m.quant).

The stage reads what quantization needs from the files — the float model, and calibration windows from a
token corpus split checked against the model's tokenizer — and hands v2m.quant modules and arrays: quant
itself knows no corpora and no checkpoints' model code (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from v2m import log
from v2m.artifacts import check_output
from v2m.checkpoint import read_meta, stored_bytes
from v2m.errors import V2MError
from v2m.models.data import Split, read_corpus
from v2m.models.loading import load_model
from v2m.quant.calibrate import Calibration, sample_windows
from v2m.quant.pipeline import QuantizeConfig, config_scheme, parse_method, quantize_model
from v2m.quant.storage import save_quantized


@dataclass(frozen=True)
class CalibrationSource:
    """Where calibration windows come from: a corpus folder, its split, how many windows of how many tokens;
    `holdout` > 0 leaves out the pieces `held_out` keeps for scoring when the same split is scored too."""

    corpus: str
    split: str = "train"
    samples: int = 32
    length: int = 256
    holdout: float = 0.0


@dataclass(frozen=True)
class DiffusionOptions:
    """What only a diffusion checkpoint takes (v2m.quant.timestep): activation ranges, static or dynamic
    activations, timestep groups, the calibration sampler's steps, the time path, concatenated inputs, the output layer, qalora."""

    ranges: str = "timestep"
    act: str = "static"
    groups: int = 4
    sampler_steps: int = 20
    time_path: str = "auto"
    qalora_steps: int = 150
    qalora_rank: int = 8
    qalora_lr: float = 1e-5
    concat: str = "auto"
    output: str = "auto"


@dataclass(frozen=True)
class QuantizeResult:
    method: str
    layers: int
    bytes_before: int  # the float model's tensors as bf16
    bytes_after: int
    seconds: float


def capability_tables() -> tuple[list[str], list[tuple[str, list[str | None]]], list[tuple[str, str, list[str | None]]]]:
    """What `v2m quantize --list` prints, derived from the code that decides it (nothing kept by hand):
    (schemes, [(method, [why refused | None per scheme])], [(kernel, unavailable-here reason or "", [why it cannot
    run the scheme | None per scheme])]). Kernel support is asked of each kernel for a 1024 × 1024 layer."""
    import torch

    from v2m.quant.formats import SCHEMES, make_scheme
    from v2m.quant.kernels import KERNELS
    from v2m.quant.pipeline import combinations, valid_for

    schemes = list(SCHEMES)
    methods = [(m, [valid_for(s, m) for s in schemes]) for m in combinations()]
    kernels = []
    for name in KERNELS.names():
        kernel = KERNELS.get(name)()
        here = kernel.unavailable(torch.device("cpu"))
        if here and "CUDA" in here:
            here = kernel.unavailable(torch.device("cuda")) if torch.cuda.is_available() else here
        kernels.append((name, here or "", [kernel.unsupported(make_scheme(s), (1024, 1024)) for s in schemes]))
    return schemes, methods, kernels


def check_request(output: str, config: QuantizeConfig, has_calibration: bool) -> None:
    """Everything that can be refused before a model is read: the output, the flags, the method × scheme."""
    if output == "-":
        raise V2MError("a quantized checkpoint must go to a file", "pass -o FILE.safetensors")
    if not 0.0 <= config.alpha <= 1.0:
        raise V2MError(f"--alpha must be within 0..1, got {config.alpha}")
    if config.damp <= 0 or config.block < 1:
        raise V2MError("--damp must be > 0 and --block ≥ 1")
    parse_method(config.method, config_scheme(config), has_calibration)


HEAD_TOKENS = 3  # BOS, tempo class, mode: the head every chunk of a piece repeats (stages/tokens/controls.py)


def held_out(split: Split, fraction: float) -> tuple[Split, Split]:
    """(the rest, the held-out pieces) of a split: every n-th piece (n = round(1/fraction)), counted from the last,
    is held out — deterministic, spread over the whole split, and whole pieces, so a piece is never scored on
    and calibrated on at once. A corpus stores a long piece as consecutive chunks that repeat the piece's head
    (BOS and its global controls), so a run of consecutive chunks with the same head is one unit here (two
    neighbouring pieces with equal heads go together: a coarser unit, never a split piece). Refused (one line)
    when the split has fewer than 2 units."""
    if not 0.0 < fraction < 1.0:
        raise V2MError(f"--holdout must be within 0..1 (exclusive), got {fraction}")
    units: list[list[int]] = []
    for p in range(split.pieces):
        head = tuple(split.piece(p)[:HEAD_TOKENS])
        if units and tuple(split.piece(units[-1][-1])[:HEAD_TOKENS]) == head:
            units[-1].append(p)
        else:
            units.append([p])
    if len(units) < 2:
        raise V2MError(f"the '{split.name}' split has {len(units)} piece(s): too few to hold some out for scoring",
                       "encode more music into the corpus, or score another split (--split)")
    step = max(2, round(1 / fraction))
    held = [p for i, unit in enumerate(units) if (len(units) - 1 - i) % step == 0 for p in unit]
    rest = [p for i, unit in enumerate(units) if (len(units) - 1 - i) % step != 0 for p in unit]
    return _pieces(split, rest, f"{split.name}-rest"), _pieces(split, held, f"{split.name}-heldout")


def _pieces(split: Split, pieces: list[int], name: str) -> Split:
    parts = [split.piece(p) for p in pieces]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in parts])]).astype(np.int64)
    return Split(name, np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64), offsets)


def calibration_windows(source: CalibrationSource, tokenizer_hash: str, max_len: int, seed: int) -> Calibration:
    """Seeded windows of a corpus split, refused when the corpus comes from another tokenizer than the model's."""
    corpus = read_corpus(source.corpus)
    if corpus.tokenizer_hash != tokenizer_hash:
        raise V2MError(f"calibration corpus {source.corpus} comes from another tokenizer "
                       f"(corpus {corpus.tokenizer_hash[:12] or 'none'}, model {tokenizer_hash[:12] or 'none'})",
                       "calibrate on a corpus encoded with the model's tokenizer")
    split = corpus.load(source.split)
    if source.holdout:
        split = held_out(split, source.holdout)[0]
    if len(split.tokens) < 2:
        raise V2MError(f"{source.corpus}: the '{source.split}' split is empty: nothing to calibrate on",
                       "calibrate on a split that has tokens (--calib-split)")
    return sample_windows(split.tokens, source.samples, min(source.length, max_len), seed, corpus=source.corpus,
                          split=split.name)


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
    parts = [m.strip() for m in config.method.split("+") if m.strip()]
    codes = [m for m in parts if m != "mixed"]
    if len(codes) > 1:
        raise V2MError(f"--method {config.method}: {' and '.join(codes)} are alternatives for a diffusion model, pick one")
    dconfig = DiffusionQuantConfig(scheme=config.scheme, method=(codes or ["rtn"])[0], mixed="mixed" in parts,
                                   budget_bits=config.budget_bits, ranges=options.ranges, act=options.act,
                                   groups=options.groups, sampler_steps=options.sampler_steps,
                                   time_path=options.time_path, concat=options.concat, output=options.output,
                                   qalora_steps=options.qalora_steps,
                                   qalora_rank=options.qalora_rank, qalora_lr=options.qalora_lr, seed=config.seed)
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
