"""The model a stage runs: a checkpoint found (the default preset when none is given), checked, loaded with its
vocabulary and a pool of decoders — what generate, evaluate and run open once and reuse.

Importing this module registers the loader of quantized checkpoints (importing v2m.quant does), so any
checkpoint `v2m quantize` wrote loads here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import v2m.quant  # noqa: F401 — registers the quantized-checkpoint loader (v2m.checkpoint.LOADERS)
from v2m.artifacts import sha256_file
from v2m.checkpoint import read_meta
from v2m.config import presets_dir
from v2m.errors import V2MError
from v2m.models.engines.decoder import DecoderPool
from v2m.models.loading import LoadedModel, load_model
from v2m.quant.kernels import KERNELS
from v2m.quant.linear import quant_linears
from v2m.stages.tokens.vocab import Vocab, load_tokenizer


@dataclass
class Session:
    """An opened model: the LoadedModel, its vocabulary, and the decoders compiled for it so far."""

    loaded: LoadedModel
    vocab: Vocab
    decoders: DecoderPool = field(default_factory=DecoderPool)

    def kernels(self) -> str:
        """The kernels the model's quantized layers run, as chosen at load ("cpu-vnni", or e.g. "cpu-int8 ×20,
        reference ×4"); "float" for a model without quantized layers. What artifacts record, never "auto"."""
        counts: dict[str, int] = {}
        for layer in quant_linears(self.loaded.model).values():
            counts[layer.kernel_label()] = counts.get(layer.kernel_label(), 0) + 1
        if not counts:
            return "float"
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{name} ×{n}" for name, n in sorted(counts.items()))

    def engine(self) -> str | None:
        """The decode step's form in the last generation (models/engines/README.md), None before any."""
        return self.decoders.last.describe() if self.decoders.last is not None else None


DEFAULT_MODELS = {"transformer": "default.safetensors", "diffusion": "diffusion.safetensors"}


def model_path(path: str | Path | None, backend: str | None = None) -> Path:
    """The checkpoint to load: `path`, or for None the preset of `backend` (presets/default.safetensors, or
    presets/diffusion.safetensors for --backend diffusion); one clear line if it is missing."""
    if path is None:
        default = presets_dir() / DEFAULT_MODELS.get(backend or "transformer", "default.safetensors")
        if not default.is_file():
            raise V2MError(f"no model given and presets/{default.name} does not exist",
                           "pass --model CHECKPOINT.safetensors (make one with: v2m train CORPUS -o model.safetensors)")
        return default
    if not Path(path).is_file():
        raise V2MError(f"{path}: no such checkpoint")
    return Path(path)


def check_kernel(kernel: str) -> None:
    """A misspelt --kernel is one line, even for a float model (which runs no kernel)."""
    if kernel != "auto":
        KERNELS.get(kernel)


def open_model(path: str | Path | None, backend: str | None = None, kernel: str = "auto",
               device: str = "cpu") -> Session:
    """Load a checkpoint (None = the default preset) and its vocabulary."""
    path = model_path(path, backend)
    check_kernel(kernel)
    loaded = load_model(path, device=device, kernel=kernel)
    if backend is not None and loaded.backend != backend:
        raise V2MError(f"{path}: a '{loaded.backend}' checkpoint, but --backend {backend} was asked for",
                       f"pass --backend {loaded.backend} or another checkpoint")
    return Session(loaded, load_tokenizer(loaded.meta["tokenizer"]))


def model_identity(model: str | Path | None, backend: str | None = None) -> dict:
    """The checkpoint by name and content hash, so the artifact says exactly which weights made it. A missing
    file or one that is not a v2m model is one line here (its header is read before the whole file is hashed)."""
    path = model_path(model, backend)
    read_meta(path)
    return {"name": path.name, "sha256": sha256_file(path)}
