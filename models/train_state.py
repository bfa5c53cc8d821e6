"""What a training run keeps and writes besides the weights: the resumable state (AdamW moments, RNG
states, progress) as named tensors + JSON (safetensors, never a pickled state_dict), the paths of the
side files, the model card, and progress lines on stderr.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from v2m import log

from .config import TrainConfig


def say(message: str) -> None:
    """Progress on stderr (rank 0 only); rich may be absent on the GPU machine."""
    if int(os.environ.get("RANK", "0")) != 0 or os.environ.get("V2M_QUIET", "") not in ("", "0"):
        return
    try:
        log.info(message)
    except ImportError:
        print(message, file=sys.stderr, flush=True)


def side_paths(output: str, checkpoint: str | None) -> dict:
    out = Path(output)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.stem
    return {"checkpoint": Path(checkpoint) if checkpoint else out.with_name(f"{stem}.ckpt.safetensors"),
            "log": out.with_name(f"{stem}.train.json"), "card": out.with_name(f"{stem}.md")}


def optimizer_state_tensors(optimizer, params: list) -> dict:
    """AdamW moments as flat named tensors (safetensors: no pickled optimizer state_dict)."""
    out = {}
    for i, p in enumerate(params):
        state = optimizer.state.get(p)
        if state:
            out[f"optim.{i}.exp_avg"] = state["exp_avg"].detach()
            out[f"optim.{i}.exp_avg_sq"] = state["exp_avg_sq"].detach()
            out[f"optim.{i}.step"] = state["step"].detach().float().reshape(1)
    return out


def restore_optimizer(optimizer, params: list, tensors: dict) -> None:
    import torch

    on_device = optimizer.defaults.get("fused") or optimizer.defaults.get("capturable")
    for i, p in enumerate(params):
        if f"optim.{i}.exp_avg" not in tensors:
            continue
        step = tensors[f"optim.{i}.step"].reshape(()).to(torch.float32)
        optimizer.state[p] = {
            "step": step.to(p.device) if on_device else step,  # fused AdamW keeps its step counts on the GPU
            "exp_avg": tensors[f"optim.{i}.exp_avg"].to(p.device, p.dtype),
            "exp_avg_sq": tensors[f"optim.{i}.exp_avg_sq"].to(p.device, p.dtype),
        }


def rng_tensors(device) -> dict:
    import torch

    out = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["rng.cuda"] = torch.cuda.get_rng_state(device)
    return out


@dataclass
class State:
    """What a checkpoint restores besides tensors."""

    step: int = 0
    total: int = 0
    tokens_seen: int = 0
    wall_s: float = 0.0
    history: list = dataclasses.field(default_factory=list)
    best_val: float | None = None
    best_step: int | None = None
    best_weights: dict | None = None  # CPU copy of the weights at the best validation NLL


def model_card(result: dict, model_cfg, cfg: TrainConfig, corpus, history: list) -> str:
    vals = [(h["step"], h["val_nll"]) for h in history if "val_nll" in h]
    curve = ", ".join(f"{s}: {v:.3f}" for s, v in vals[-8:])
    splits = "; ".join(f"{k}: {v.get('pieces', '?')} pieces, {v.get('tokens', '?')} tokens" for k, v in corpus.splits.items())
    return f"""# v2m model card

| | |
|---|---|
| backend | {model_cfg.backend} |
| parameters | {result['params']:,} ({model_cfg.n_layers} layers, d_model {model_cfg.d_model}, {model_cfg.n_heads} heads, d_ff {model_cfg.d_ff}, {model_cfg.mlp}, {model_cfg.norm} norm, RoPE, tied embeddings) |
| vocabulary | {model_cfg.vocab_size} tokens, tokenizer hash `{corpus.tokenizer_hash}` |
| data | corpus `{result['corpus']}` — {splits} |
| training | preset `{result['preset']}`, {result['steps']} steps × {cfg.batch} × {cfg.context} tokens = {result['tokens_seen']:,} tokens, AdamW lr {cfg.lr:g} (warm-up {cfg.warmup}, cosine to ×{cfg.min_lr_ratio:g}), weight decay {cfg.weight_decay:g}, dropout {model_cfg.dropout:g}, seed {cfg.seed} |
| hardware | {result['device']} × {result['processes']}, wall time {result['wall_s']:.0f} s |
| validation NLL | {result['val_nll']} nats/token at the last step, best {result['best_val_nll']} at step {result['best_step']}; curve (step: NLL): {curve} |
| weights | {result['weights']} |
| test NLL | {result['test_nll']} nats/token (the saved weights) |

Made by `v2m train` (models/train.py); the `.train.json` beside this file holds the full log.
"""
