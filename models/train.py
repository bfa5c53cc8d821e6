"""Training: corpus → v2m.model checkpoint, on CPU, one GPU, or several through torchrun + DDP.

    v2m train CORPUS -o model.safetensors --preset small --device cuda --max-minutes 7
    torchrun --nproc_per_node 2 -m v2m train CORPUS -o model.safetensors     # DDP (nccl, or gloo on CPU)

AdamW (Loshchilov & Hutter 2019) with linear warm-up and cosine decay, gradient clipping, bf16
autocast on GPU, validation NLL every `eval_every` steps, atomic resumable checkpoints. Runs with
torch + numpy + safetensors + v2m's core only (no MidiTok, no typer/rich needed). Determinism: the
batch of a step is a pure function of (seed, step, rank) and the checkpoint holds weights,
optimiser moments and RNG states, so on CPU a run resumed from its checkpoint ends with the same
weights as an uninterrupted one. Multi-GPU uses torch.distributed's DistributedDataParallel; the
global batch is split evenly across ranks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from v2m.artifacts import atomic_write_bytes, check_output
from v2m.checkpoint import STATE_PREFIXES, load_tensors, read_meta
from v2m.errors import V2MError
from v2m.models.loading import resolve_device, save_model

from .config import TrainConfig, load_model_preset, model_config_from_dict
from .data import eval_starts, gather_windows, read_corpus, window_starts
from .registry import build_model
from .train_state import State, model_card, optimizer_state_tensors, restore_optimizer, rng_tensors, say, side_paths

# peak dense bf16 tensor FLOP/s by device name, for model FLOPs utilisation (MFU)
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


@dataclass(frozen=True)
class RunOptions:
    """One training run. `overrides` replace TrainConfig fields of the preset (None = keep)."""

    corpus: str
    output: str
    preset: str = "small"
    overrides: dict = dataclasses.field(default_factory=dict)
    resume: str | None = None
    init: str | None = None          # fine-tune from these model weights
    checkpoint: str | None = None    # default: <output stem>.ckpt.safetensors next to the output
    device: str = "auto"
    max_minutes: float | None = None
    save_dtype: str = "float32"
    force: bool = False


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr over cfg.warmup steps, then cosine down to lr·min_lr_ratio at `total`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def pick_device(name: str, local_rank: int):
    """The device this rank trains on: `name` is auto, cpu or cuda (train() refuses others), checked against the
    machine by checkpoint.resolve_device; a distributed rank takes its own GPU."""
    import torch

    return torch.device("cpu") if resolve_device(name) == "cpu" else torch.device("cuda", local_rank)


def peak_flops(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def evaluate_nll(model, tokens, starts, context: int, batch: int, device, autocast) -> float:
    """Mean NLL (nats/token) of `model` over fixed windows of a split."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(starts), batch):
            x, y = gather_windows(tokens, starts[i:i + batch], context)
            with autocast():
                logits = model(x)
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    model.train(was_training)
    return total / max(1, count)


def train(opts: RunOptions) -> dict:
    """Run training and write the model, a resumable checkpoint, a JSON log and a model card. Returns the summary."""
    import torch
    import torch.nn.functional as F

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    paths = side_paths(opts.output, opts.checkpoint)
    check_output(opts.output, opts.force, inputs=[opts.corpus, Path(opts.corpus) / "index.json", opts.resume, opts.init,
                                                 paths["checkpoint"]])
    if opts.save_dtype not in ("float32", "bfloat16", "float16"):
        raise V2MError(f"unknown --save-dtype '{opts.save_dtype}'", "use float32, bfloat16 or float16")
    if opts.device not in ("auto", "cpu", "cuda"):
        raise V2MError(f"unknown device '{opts.device}'", "use auto, cpu or cuda")
    if opts.resume is not None and not Path(opts.resume).exists():
        raise V2MError(f"--resume {opts.resume}: no such file", "pass the MODEL.ckpt.safetensors a run wrote")
    if opts.resume is None and paths["checkpoint"].exists() and not opts.force:
        raise V2MError(f"{paths['checkpoint']}: a checkpoint of an earlier run exists",
                       f"continue it with --resume {paths['checkpoint']}, or pass --force to start over")
    corpus = read_corpus(opts.corpus)

    # configuration: preset, command-line overrides, or the checkpoint being resumed
    resume_meta = None
    if opts.resume is not None:
        resume_meta = read_meta(opts.resume)
        if not resume_meta.get("train_state"):
            raise V2MError(f"{opts.resume}: a finished model, not a resumable training checkpoint",
                           f"resume from the .ckpt.safetensors file, or fine-tune with --init {opts.resume}")
        if resume_meta["tokenizer_hash"] != corpus.tokenizer_hash:
            raise V2MError(f"{opts.corpus}: corpus made with another tokenizer ({corpus.tokenizer_hash[:12]}) than the "
                           f"checkpoint ({resume_meta['tokenizer_hash'][:12]})", "resume with the corpus the run started on")
        model_cfg = model_config_from_dict(resume_meta["config"])
        cfg = TrainConfig(**resume_meta["train_state"]["train_config"])
        preset_name = resume_meta["train_state"].get("preset", opts.preset)
    else:
        preset = load_model_preset(opts.preset)
        preset_name = opts.preset
        overrides = {k: v for k, v in opts.overrides.items() if v is not None}
        try:
            cfg = dataclasses.replace(preset.train, **overrides)
        except (TypeError, ValueError) as e:
            raise V2MError(f"bad training option: {e}")
        model_cfg = preset.model.with_vocab(corpus.vocab_size)
        if cfg.context > model_cfg.max_len:
            raise V2MError(f"--context {cfg.context} exceeds the model's max_len {model_cfg.max_len}")
    if opts.init is not None:
        init_meta = read_meta(opts.init)
        if init_meta["tokenizer_hash"] != corpus.tokenizer_hash:
            raise V2MError(f"{opts.corpus}: corpus made with another tokenizer than {opts.init}",
                           "fine-tune on a corpus encoded with the model's tokenizer")
        model_cfg = model_config_from_dict(init_meta["config"])
    if cfg.batch % world:
        raise V2MError(f"--batch {cfg.batch} is not divisible by the {world} processes")

    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if opts.device != "cpu" and torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    device = pick_device(opts.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    train_split, val_split = corpus.load("train"), corpus.load("val")
    test_split = corpus.load("test") if "test" in corpus.splits else None
    train_tokens = torch.as_tensor(train_split.tokens, device=device)
    val_tokens = torch.as_tensor(val_split.tokens, device=device)
    if len(val_split.tokens) < 2:
        raise V2MError(f"{opts.corpus}: the val split is empty", "rebuild the corpus with a val share > 0")
    val_context = min(cfg.context, len(val_split.tokens) - 1)  # a tiny val split is scored in one shorter window
    val_starts = eval_starts(val_split, val_context, cfg.eval_tokens)

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device)
    if opts.init is not None:
        weights = {k: v for k, v in load_tensors(opts.init).items() if not k.startswith(STATE_PREFIXES)}
        model.load_state_dict({k: v.float() for k, v in weights.items()})
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)
    ordered = decay + no_decay  # the order optimizer state is saved in

    state = State(total=cfg.steps)
    if opts.resume is not None:
        tensors = load_tensors(opts.resume)
        model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(STATE_PREFIXES)})
        restore_optimizer(optimizer, ordered, tensors)
        saved = resume_meta["train_state"]
        state = State(step=saved["step"], total=saved["total"], tokens_seen=saved["tokens_seen"],
                      wall_s=saved["wall_s"], history=saved["history"], best_val=saved.get("best_val"),
                      best_step=saved.get("best_step"))
        best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
        state.best_weights = best or None
        torch.set_rng_state(tensors["rng.cpu"])
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        say(f"resuming {opts.resume} at step {state.step}/{state.total}")

    n_params = model.num_params()
    flops_per_token = 6 * n_params + 12 * model_cfg.n_layers * model_cfg.d_model * cfg.context
    peak = peak_flops(device)
    step_model = model
    use_compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    if use_compile:
        step_model = torch.compile(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(step_model, device_ids=[device.index] if device.type == "cuda" else None)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def checkpoint(path: Path, final: bool = False) -> None:
        train_state = {"step": state.step, "total": state.total, "tokens_seen": state.tokens_seen,
                       "wall_s": round(state.wall_s, 3), "history": state.history, "best_val": state.best_val,
                       "best_step": state.best_step,
                       "train_config": dataclasses.asdict(cfg), "preset": preset_name}
        save_model(path, model, model_cfg, corpus.tokenizer, corpus.tokenizer_hash, summary(), force=True,
                   extra_tensors={**optimizer_state_tensors(optimizer, ordered), **rng_tensors(device),
                                  **{f"best.{k}": v for k, v in (state.best_weights or {}).items()}},
                   train_state=train_state)

    def summary() -> dict:
        return {"corpus": Path(corpus.path).name, "tokenizer_hash": corpus.tokenizer_hash,
                "train_tokens": int(len(train_split.tokens)), "train_sequences": train_split.pieces,
                "preset": preset_name, "params": n_params, "steps": state.step, "planned_steps": state.total,
                "batch": cfg.batch, "context": cfg.context, "tokens_seen": state.tokens_seen,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "processes": world, "wall_s": round(state.wall_s, 1),
                "val_nll": state.history[-1].get("val_nll") if state.history else None, "seed": cfg.seed,
                "best_val_nll": state.best_val, "best_step": state.best_step,
                "weights": "best validation NLL" if cfg.keep_best else "last step"}

    local_batch = cfg.batch // world
    tokens_per_step = cfg.batch * cfg.context
    say(f"training {model_cfg.backend} ({n_params / 1e6:.2f} M parameters) on {len(train_split.tokens):,} tokens "
        f"({train_split.pieces} sequences), {world} process(es) on {device}, batch {cfg.batch} × {cfg.context} tokens, "
        f"{state.total} steps" + (f", stopping after {opts.max_minutes:g} min" if opts.max_minutes else ""))
    step_model.train()
    started = time.perf_counter()
    wall_before = state.wall_s
    calibration = None  # (step, time) when the step-time measurement for --max-minutes began
    last_log = started
    first_step, first_tokens = state.step, state.tokens_seen  # rates count this process's work only
    while state.step < state.total:
        step = state.step
        lr = lr_at(step, state.total, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = window_starts(train_split, cfg.batch, cfg.context, cfg.seed, step, cfg.piece_start_frac)
        starts = starts[rank * local_batch:(rank + 1) * local_batch]
        x, y = gather_windows(train_tokens, starts, cfg.context)
        try:
            with autocast():
                logits = step_model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            loss.backward()
        except Exception as e:  # noqa: BLE001 - a compiler failure must not cost the run: fall back to eager once
            if not use_compile or step != first_step or world > 1:
                raise
            say(f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); training eagerly")
            use_compile, step_model = False, model
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                logits = step_model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens_seen += tokens_per_step
        now = time.perf_counter()
        state.wall_s = wall_before + (now - started)

        if opts.max_minutes:
            # time budget: measure the step time after compilation settles, then fix the schedule's length once
            if calibration is None and state.step == 5:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                calibration = (state.step, time.perf_counter())
            elif calibration and state.step == calibration[0] + 20 and state.total == cfg.steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                per_step = (time.perf_counter() - calibration[1]) / 20
                remaining = opts.max_minutes * 60 - (time.perf_counter() - started)
                fit = state.step + int(0.92 * remaining / per_step)
                state.total = max(state.step + 1, min(cfg.steps, fit))
                say(f"time budget: {per_step * 1000:.1f} ms/step → {state.total} steps")
            over = (time.perf_counter() - started) > opts.max_minutes * 60
            if world > 1:
                flag = torch.tensor([int(over)], device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                over = bool(flag.item())
            if over:
                say(f"time budget of {opts.max_minutes:g} min reached at step {state.step}")
                state.total = state.step

        is_eval = cfg.eval_every and state.step % cfg.eval_every == 0 or state.step == state.total
        record = {"step": state.step, "loss": None, "lr": lr}
        if is_eval or now - last_log > 10 or state.step == 1:
            rate = (state.tokens_seen - first_tokens) / max(now - started, 1e-9)
            record.update(loss=round(loss.item(), 4), grad_norm=round(float(grad_norm), 3),
                          tokens_per_s=round(rate), elapsed_s=round(state.wall_s, 1), tokens_seen=state.tokens_seen)
            if peak:
                record["mfu"] = round(flops_per_token * rate / (peak * world), 4)
            if is_eval and rank == 0:
                record["val_nll"] = round(evaluate_nll(model, val_tokens, val_starts, val_context, local_batch, device, autocast), 4)
                if state.best_val is None or record["val_nll"] < state.best_val:
                    # keep the weights of the best validation NLL: many epochs over a small corpus can overfit
                    state.best_val, state.best_step = record["val_nll"], state.step
                    state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            eta = (state.total - state.step) * (now - started) / max(1, state.step - first_step)
            mfu = f" MFU {record['mfu']:.1%}" if "mfu" in record else f" {flops_per_token * rate / 1e9:.1f} GFLOP/s"
            val = f" val {record['val_nll']:.4f}" if "val_nll" in record else ""
            say(f"step {state.step}/{state.total} loss {record['loss']:.4f}{val} lr {lr:.2e} "
                f"{rate:,.0f} tok/s{mfu} ETA {eta:.0f}s")
            state.history.append(record)
            last_log = now
        if rank == 0 and cfg.ckpt_every and state.step % cfg.ckpt_every == 0 and state.step < state.total:
            checkpoint(paths["checkpoint"])

    test_nll = None
    if rank == 0:
        checkpoint(paths["checkpoint"], final=True)
        if cfg.keep_best and state.best_weights is not None:
            model.load_state_dict(state.best_weights)
        if test_split is not None and len(test_split.tokens) >= 2:
            test_tokens = torch.as_tensor(test_split.tokens, device=device)
            test_context = min(cfg.context, len(test_split.tokens) - 1)
            test_nll = round(evaluate_nll(model, test_tokens, eval_starts(test_split, test_context, cfg.eval_tokens),
                                          test_context, local_batch, device, autocast), 4)
        result = {**summary(), "test_nll": test_nll}
        save_model(opts.output, model, model_cfg, corpus.tokenizer, corpus.tokenizer_hash, result, force=True,
                   dtype=opts.save_dtype)
        atomic_write_bytes(paths["log"], (json.dumps({"summary": result, "config": dataclasses.asdict(cfg),
                                                      "model": dataclasses.asdict(model_cfg), "history": state.history},
                                                     indent=1) + "\n").encode())
        atomic_write_bytes(paths["card"], model_card(result, model_cfg, cfg, corpus, state.history).encode())
        say(f"wrote {opts.output} ({Path(opts.output).stat().st_size / 1e6:.1f} MB), {paths['log'].name}, {paths['card'].name}; "
            f"val NLL {result['val_nll']}, test NLL {test_nll}")
    else:
        result = summary()
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result
