"""Model and training configurations: frozen dataclasses filled from presets/models/<name>.toml.

A preset file has two tables, `[model]` (the architecture, without the vocabulary size, which
comes from the corpus's tokenizer) and `[train]` (optimiser, schedule and batch shape). Unknown
keys are an error (v2m.config.from_dict).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from v2m.config import from_dict, load_preset, to_dict
from v2m.errors import V2MError
from v2m.limits import MAX_CONTEXT


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer. Lengths are in tokens."""

    vocab_size: int = 0          # set from the corpus/tokenizer; 0 in presets
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256              # hidden width of the MLP (per branch for SwiGLU)
    max_len: int = 1024          # longest context the RoPE tables and KV caches are built for
    norm: str = "rms"            # "rms" (RMSNorm) or "layer" (LayerNorm)
    mlp: str = "swiglu"          # "swiglu" or "gelu"
    rope_base: float = 10000.0
    dropout: float = 0.0
    backend: str = "transformer"

    def __post_init__(self):
        # bounds before anything is built from a downloaded checkpoint's config (v2m.limits): a config asking for
        # petabytes is refused here, the exact parameter count is checked on the meta device (loading.py)
        for name, low, high in (("vocab_size", 0, 1 << 24), ("d_model", 1, 1 << 16), ("n_layers", 1, 1024),
                                ("n_heads", 1, 1024), ("d_ff", 1, 1 << 18), ("max_len", 1, MAX_CONTEXT)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} {getattr(self, name)} is outside {low}..{high}")
        if not 0 < self.rope_base < 1e12:
            raise ValueError(f"rope_base {self.rope_base} is outside (0, 1e12)")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("the head dimension must be even (RoPE rotates pairs of channels)")
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"norm must be 'rms' or 'layer', not {self.norm!r}")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"mlp must be 'swiglu' or 'gelu', not {self.mlp!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def with_vocab(self, vocab_size: int) -> "ModelConfig":
        return dataclasses.replace(self, vocab_size=int(vocab_size))


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and batch shape. `batch` is the global batch in sequences, `context` in tokens."""

    steps: int = 200
    batch: int = 16
    context: int = 256
    lr: float = 3e-3
    min_lr_ratio: float = 0.1    # the cosine decays to lr * min_lr_ratio
    warmup: int = 20             # steps of linear warm-up
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 50         # steps between validation NLL measurements (0 = only at the end)
    eval_tokens: int = 16384     # validation tokens per measurement (a fixed set, the same every time)
    ckpt_every: int = 100        # steps between resumable checkpoints (0 = only at the end)
    piece_start_frac: float = 0.25  # share of windows that start at a piece's BOS, so global controls are seen
    keep_best: bool = True       # the saved model is the one of the best validation NLL (else the last step's)
    compile: str = "auto"        # torch.compile the training step: "auto" (on CUDA), "on", "off"
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch < 1 or self.context < 2:
            raise ValueError("steps and batch must be ≥ 1 and context ≥ 2")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError("compile must be 'auto', 'on' or 'off'")


@dataclass(frozen=True)
class Preset:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_model_preset(name_or_path: str) -> Preset:
    """A preset by name (debug, small, base) or a path to a TOML file."""
    preset = load_preset("models", name_or_path, Preset)
    if preset.train.context > preset.model.max_len:
        raise V2MError(f"preset {name_or_path}: train.context {preset.train.context} exceeds model.max_len {preset.model.max_len}")
    return preset


def model_config_from_dict(data: dict):
    """The model config recorded in a checkpoint's metadata: a ModelConfig, or the config class of the backend it
    names (the diffusion backend's DiffusionConfig)."""
    if isinstance(data, dict) and data.get("backend") == "diffusion":
        from .diffusion import DiffusionConfig

        return from_dict(DiffusionConfig, data, where="checkpoint config")
    return from_dict(ModelConfig, data, where="checkpoint config")


__all__ = ["ModelConfig", "TrainConfig", "Preset", "load_model_preset", "model_config_from_dict", "to_dict"]
