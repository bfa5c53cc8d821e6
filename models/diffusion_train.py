"""Training the diffusion backend: a roll set (stages/tokens/rolls.py) → a v2m.model checkpoint of backend
"diffusion", with a JSON log and a model card beside it.

    v2m train ROLLS.safetensors --backend diffusion -o diffusion.safetensors --preset diffusion --max-minutes 6

The whole set is laid out once on the device as bool planes (onset, frame per role and pitch; ~0.4 kB a step), so
a batch is an index gather: a window of `window` steps from a random bar of a piece (pieces drawn in proportion to
their length), transposed by a random shift in [-transpose, +transpose] semitones (shifts that would push a note out
of the roll's range are clipped to the nearest that does not: transposition augmentation), its per-step conditions
(models/diffusion.py condition_features) with the rhythm condition read off the window's own onsets (randomly
thinned and jittered so the model also follows an imperfect, video-made onset curve), and a random known prefix
of whole bars for half of the windows (the overlap context of long generations). AdamW, linear warm-up, cosine
decay, bf16 autocast on CUDA, a fixed validation set (every 20th piece) measured every `eval_every` steps.

The schedule follows whichever runs out first, the steps or `--max-minutes`: the cosine's progress is the larger
of step / steps and elapsed / time limit, so a run stopped by time has still decayed its learning rate to the end
(the first shipped model was cut at step 4381 of 12,000 with the rate still high). An exponential moving average
of the weights (`ema`, as DDPM/DiT sample from) is what is validated and saved, once the warm-up is over; the
weights of the best validation loss are saved. Runs with torch + numpy + safetensors + v2m's core only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from v2m.artifacts import atomic_write_bytes, check_output
from v2m.config import load_preset
from v2m.errors import V2MError

from .diffusion import (
    CHANNELS,
    N_PITCH,
    PITCH_LOW,
    PLANES,
    ROLES,
    STEPS_PER_BEAT,
    DiffusionConfig,
    condition_features,
    diffusion_loss,
    )
from .loading import resolve_device, save_model
from .train_state import say, side_paths


@dataclass(frozen=True)
class DiffusionTrainConfig:
    steps: int = 4000
    batch: int = 64
    lr: float = 4e-4
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_batches: int = 8
    transpose: int = 6           # ± semitones of transposition augmentation
    known_share: float = 0.5     # windows with a known prefix (the overlap context)
    ema: float = 0.0             # decay of the weights' moving average that is validated and saved (0 = none)
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch < 1 or self.eval_batches < 1:
            raise ValueError("steps, batch and eval_batches must be ≥ 1")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError("ema must be in [0, 1)")


def learning_rate(cfg: DiffusionTrainConfig, step: int, elapsed: float, limit: float | None) -> tuple[float, float]:
    """(learning rate, progress 0..1) at `step` after `elapsed` seconds: linear warm-up over `warmup` steps, then a
    cosine from lr to lr/10 over the progress — the larger of step / steps and elapsed / limit (seconds, None = no
    time limit), so that whichever runs out first ends the decay. Progress ≥ 1 ends the run."""
    progress = step / cfg.steps
    if limit:
        progress = max(progress, elapsed / limit)
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup, progress
    start = cfg.warmup / cfg.steps
    phase = min(1.0, max(0.0, (progress - start) / max(1e-9, 1.0 - start)))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * phase))), progress


@dataclass(frozen=True)
class DiffusionPreset:
    model: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)


def load_diffusion_preset(name: str) -> DiffusionPreset:
    """presets/models/<name>.toml (diffusion, diffusion-debug) or a TOML path, read as a diffusion preset."""
    return load_preset("models", name, DiffusionPreset)


# ---------------------------------------------------------------- the roll set

@dataclass
class RollSet:
    arrays: dict
    summary: dict
    tokenizer: dict
    features: list  # per piece float32 [steps, n_features] without the rhythm column filled

    @property
    def pieces(self) -> int:
        return len(self.arrays["piece_steps"])


def read_roll_set(path: str | Path, n_density: int) -> RollSet:
    """A roll set file → its arrays, checked; one line when the file is something else."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise V2MError(f"{path}: no such roll set", "make one with: v2m encode-tokens --source music21 --rolls -o ROLLS.safetensors")
    try:
        with safe_open(str(path), "np") as f:
            meta = json.loads((f.metadata() or {}).get("v2m", "{}"))
        arrays = load_file(str(path))
    except Exception:
        meta, arrays = {}, {}
    if meta.get("format") != "v2m.rolls":
        raise V2MError(f"{path}: not a v2m roll set (expected format v2m.rolls)",
                       "`--backend diffusion` trains on a roll set: v2m encode-tokens --source music21 --rolls -o ROLLS.safetensors")
    if not meta.get("tokenizer"):
        raise V2MError(f"{path}: the roll set records no tokenizer", "make it again with v2m encode-tokens --rolls")
    features = []
    for i in range(len(arrays["piece_steps"])):
        b0, b1 = arrays["bar_offsets"][i], arrays["bar_offsets"][i + 1]
        s0, s1 = arrays["beat_offsets"][i], arrays["beat_offsets"][i + 1]
        steps = int(arrays["piece_steps"][i])
        features.append(condition_features(np.zeros(steps, np.float32), arrays["bar_step"][b0:b1],
                                           arrays["bar_beats"][b0:b1], arrays["bar_density"][b0:b1],
                                           arrays["bar_phrase"][b0:b1], arrays["beat_strength"][s0:s1], steps, n_density))
    return RollSet(arrays, meta.get("summary", {}), meta["tokenizer"], features)


class Batcher:
    """Training and validation windows of a roll set on `device` (see the module docstring)."""

    def __init__(self, rolls: RollSet, config: DiffusionConfig, cfg: DiffusionTrainConfig, device):
        import torch

        a = rolls.arrays
        self.config, self.cfg, self.device = config, cfg, device
        self.W = config.window
        steps = a["piece_steps"].astype(np.int64)
        self.start = np.concatenate([[0], np.cumsum(steps + self.W)])[:-1]  # each piece padded by a window of rests
        total = int(self.start[-1] + steps[-1] + self.W)
        notes = a["notes"].astype(np.int64)
        piece_of_note = np.repeat(np.arange(len(steps)), np.diff(a["note_offsets"]))
        at = self.start[piece_of_note] + notes[:, 0]
        onset = torch.zeros((total, len(ROLES), N_PITCH), dtype=torch.bool)
        frame = torch.zeros((total, len(ROLES), N_PITCH), dtype=torch.bool)
        p = torch.as_tensor(notes[:, 2] - PITCH_LOW)
        r = torch.as_tensor(notes[:, 3])
        ok = (p >= 0) & (p < N_PITCH)
        onset[torch.as_tensor(at)[ok], r[ok], p[ok]] = True
        dur = np.maximum(notes[:, 1], 1)
        rep = np.repeat(np.arange(len(notes)), dur)
        within = np.arange(len(rep)) - np.repeat(np.cumsum(dur) - dur, dur)
        fr = torch.as_tensor(at[rep] + within)
        okr = ok[torch.as_tensor(rep)]
        frame[fr[okr], r[torch.as_tensor(rep)][okr], p[torch.as_tensor(rep)][okr]] = True
        self.onset, self.frame = onset.to(device), frame.to(device)
        self.any_onset = onset.flatten(1).sum(1).to(device)  # notes starting at each step
        feats = np.zeros((total, config.n_features), np.float32)
        for i, f in enumerate(rolls.features):
            feats[self.start[i]:self.start[i] + len(f)] = f
        self.features = torch.as_tensor(feats).to(device)
        self.valid = torch.zeros(total, dtype=torch.float32)
        for i, s in enumerate(steps):
            self.valid[self.start[i]:self.start[i] + s] = 1.0
        self.valid = self.valid.to(device)
        self.affect = torch.as_tensor(a["piece_globals"].astype(np.int64)).to(device)
        # window starts: every bar line of every piece
        bar_piece = np.repeat(np.arange(len(steps)), np.diff(a["bar_offsets"]))
        bar_starts = self.start[bar_piece] + a["bar_step"].astype(np.int64)
        self.bar_piece, self.bar_starts = bar_piece, bar_starts
        val = bar_piece % 20 == 7
        self.train_bars = np.flatnonzero(~val)
        self.val_bars = np.flatnonzero(val) if val.any() else self.train_bars
        self.piece_bar_lines = torch.zeros(total, dtype=torch.bool)
        self.piece_bar_lines[torch.as_tensor(bar_starts)] = True
        self.piece_bar_lines = self.piece_bar_lines.to(device)
        self.train_bars_t = torch.as_tensor(self.train_bars, device=device)
        self.val_bars_t = torch.as_tensor(self.val_bars, device=device)
        self.bar_starts_t = torch.as_tensor(bar_starts, device=device)
        self.bar_piece_t = torch.as_tensor(bar_piece, device=device)

    def batch(self, gen, val: bool = False):
        """(x0, known, mask, features, affect, valid) for one batch drawn with the torch.Generator `gen` (on the
        batcher's device); all on the device, no host round trip."""
        import torch

        dev, B, W = self.device, self.cfg.batch, self.W
        bars = self.val_bars_t if val else self.train_bars_t
        pick = bars[torch.randint(len(bars), (B,), device=dev, generator=gen)]
        index = self.bar_starts_t[pick][:, None] + torch.arange(W, device=dev)[None]
        x = torch.stack([self.onset[index], self.frame[index]], dim=3)  # [B, W, roles, planes, P] bool
        # transposition: a random shift, clipped so that every note of the window stays in the roll's range
        present = x.flatten(1, 3).any(1)  # [B, P]
        pitches = torch.arange(N_PITCH, device=dev)
        low = torch.where(present, pitches, N_PITCH).min(1).values
        high = torch.where(present, pitches, -1).max(1).values
        shift = torch.randint(-self.cfg.transpose, self.cfg.transpose + 1, (B,), device=dev, generator=gen)
        shift = torch.where(high >= 0, torch.minimum(torch.maximum(shift, -low), N_PITCH - 1 - high), 0)
        source = pitches[None] - shift[:, None]  # [B, P]: the pitch each output pitch comes from
        inside = (source >= 0) & (source < N_PITCH)
        gathered = torch.gather(x, 4, source.clamp(0, N_PITCH - 1)[:, None, None, None].expand_as(x))
        x = gathered & inside[:, None, None, None]
        x0 = x.flatten(2).float() * 2 - 1  # [B, W, CHANNELS]
        features = self.features[index].clone()
        # the rhythm condition from the window's own onsets: 0.5 for one note starting, 1 for several (a strong
        # onset), thinned (10 % dropped) and with 5 % spurious impulses, then spread to the neighbours at 0.5
        impulses = torch.clamp(self.any_onset[index].float() / 2.0, max=1.0)
        noise = torch.rand(impulses.shape, device=dev, generator=gen)
        impulses = torch.where(noise < 0.1, torch.zeros_like(impulses), impulses)
        impulses = torch.where((noise > 0.95) & (impulses == 0), torch.full_like(impulses, 0.5), impulses)
        spread = impulses.clone()
        spread[:, 1:] = torch.maximum(spread[:, 1:], 0.5 * impulses[:, :-1])
        spread[:, :-1] = torch.maximum(spread[:, :-1], 0.5 * impulses[:, 1:])
        features[..., 0] = spread
        valid = self.valid[index]
        # a known prefix of whole bars (a bar line in the first half of the window) for known_share of the windows
        lines = self.piece_bar_lines[index].clone()
        lines[:, 0] = False
        lines[:, W // 2 + 1:] = False
        score = torch.rand((B, W), device=dev, generator=gen) * lines
        cut = score.argmax(1)
        use = (torch.rand(B, device=dev, generator=gen) < self.cfg.known_share) & lines.any(1)
        mask = ((torch.arange(W, device=dev)[None] < cut[:, None]) & use[:, None]).float()
        affect = self.affect[self.bar_piece_t[pick]]
        return x0, x0, mask, features, affect, valid


# ---------------------------------------------------------------- the loop

def train_diffusion(rolls_path: str, output: str, *, preset: str = "diffusion", overrides: dict | None = None,
                    device: str = "auto", max_minutes: float | None = None, save_dtype: str = "float32",
                    force: bool = False) -> dict:
    """Train the DiT on a roll set; write `output`, MODEL.train.json and MODEL.md. Returns the summary."""
    import torch

    paths = side_paths(output, None)
    check_output(output, force, inputs=[rolls_path])
    if save_dtype not in ("float32", "bfloat16", "float16"):
        raise V2MError(f"unknown --save-dtype '{save_dtype}'", "use float32, bfloat16 or float16")
    found = load_diffusion_preset(preset)
    cfg = dataclasses.replace(found.train, **{k: v for k, v in (overrides or {}).items()
                                              if v is not None and k in {f.name for f in dataclasses.fields(found.train)}})
    rolls = read_roll_set(rolls_path, found.model.n_density)
    tokenizer_hash = str(rolls.summary.get("tokenizer_hash", ""))
    n_density = int(rolls.tokenizer["stats"]["n_density"])
    config = dataclasses.replace(found.model, n_density=n_density)
    if config.n_features != rolls.features[0].shape[1]:
        rolls = read_roll_set(rolls_path, n_density)
    dev = torch.device(resolve_device(device))
    torch.manual_seed(cfg.seed)
    from .registry import build_model

    model = build_model(config).to(dev)
    batcher = Batcher(rolls, config, cfg, dev)
    params = sum(p.numel() for p in model.parameters())
    say(f"diffusion: {params / 1e6:.2f} M parameters, {rolls.pieces} pieces, {int(batcher.valid.sum())} steps of "
        f"roll, window {config.window} steps, on {dev}")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.99))
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else \
        (lambda: torch.autocast("cpu", enabled=False))
    generator = torch.Generator(device=dev).manual_seed(cfg.seed)
    batches = torch.Generator(device=dev).manual_seed(cfg.seed + 1)

    def evaluate() -> float:
        model.eval()
        vbatches = torch.Generator(device=dev).manual_seed(1234)
        vgen = torch.Generator(device=dev).manual_seed(1235)
        total = 0.0
        with torch.no_grad(), autocast():
            for _ in range(cfg.eval_batches):
                x0, known, mask, feats, affect, valid = batcher.batch(vbatches, val=True)
                total += float(diffusion_loss(model, x0, known, mask, feats, affect, valid, generator=vgen))
        model.train()
        return total / cfg.eval_batches

    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()} if cfg.ema else None
    # (average, tensor) pairs made once: the state dict's tensors are the parameters' own storage, and
    # load_state_dict copies into it, so the pairs stay valid while the average is swapped in and out
    averaged = [(ema[k], v) for k, v in model.state_dict().items() if v.is_floating_point()] if ema else []
    live = None  # the trained weights while the average is in the model for validation

    def swap_in_average():
        nonlocal live
        if ema is not None and step > cfg.warmup:
            live = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(ema)

    def swap_back():
        nonlocal live
        if live is not None:
            model.load_state_dict(live)
            live = None

    def validate(train_loss: float):
        nonlocal best, best_state
        swap_in_average()
        val = evaluate()
        history.append({"step": step, "train_loss": round(train_loss, 5), "val_loss": round(val, 5),
                        "lr": round(lr, 7), "seconds": round(time.time() - started, 1)})
        say(f"step {step}/{cfg.steps}: loss {history[-1]['train_loss']:.4f}, val {val:.4f}"
            f"{' (average)' if live is not None else ''}, lr {lr:.2e}, {time.time() - started:.0f} s")
        if val < best:
            best, best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}
        swap_back()

    history, best, best_state = [], math.inf, None
    started = time.time()
    limit = max_minutes * 60 if max_minutes is not None else None
    step = 0
    lr = cfg.lr
    losses, pending = [], []

    def flush():  # the pending losses to the host: one sync per flush, not per step
        nonlocal pending
        if pending:
            losses.extend(torch.stack(pending).float().tolist())
            pending = []

    stopped = "steps"
    model.train()
    while True:
        lr, progress = learning_rate(cfg, step, time.time() - started, limit)
        if progress >= 1.0:
            stopped = "steps" if step >= cfg.steps else "time"
            break
        for group in opt.param_groups:
            group["lr"] = lr
        x0, known, mask, feats, affect, valid = batcher.batch(batches)
        with autocast():
            loss = diffusion_loss(model, x0, known, mask, feats, affect, valid, generator=generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if averaged:
            with torch.no_grad():
                decay = 0.0 if step < cfg.warmup else cfg.ema  # the average starts after the warm-up
                for average, v in averaged:
                    average.lerp_(v.float(), 1.0 - decay)
        pending.append(loss.detach())
        step += 1
        if len(pending) >= 50:
            flush()
        if step % cfg.eval_every == 0:
            flush()
            validate(float(np.mean(losses[-cfg.eval_every:])))
    flush()
    if not history or history[-1]["step"] != step:
        validate(float(np.mean(losses[-50:])) if losses else math.nan)
    if best_state is not None:
        model.load_state_dict(best_state)
    summary = {"backend": "diffusion", "steps": step, "stopped_by": stopped, "best_val_loss": round(best, 5),
               "first_loss": round(losses[0], 5) if losses else None,
               "final_train_loss": history[-1]["train_loss"], "seconds": round(time.time() - started, 1),
               "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev), "parameters": params,
               "weights": "moving average" if ema is not None and step > cfg.warmup else "trained",
               "train_config": dataclasses.asdict(cfg), "preset": preset, "rolls": rolls.summary}
    save_model(output, model, config, rolls.tokenizer, tokenizer_hash, summary, force=True,
               dtype=None if save_dtype == "float32" else save_dtype)
    atomic_write_bytes(paths["log"], json.dumps({"summary": summary, "history": history}, indent=1).encode())
    atomic_write_bytes(paths["card"], diffusion_card(summary, config, history).encode())
    say(f"wrote {output} ({Path(output).stat().st_size / 1e6:.1f} MB), {paths['log'].name}, {paths['card'].name}")
    return summary


def diffusion_card(summary: dict, config: DiffusionConfig, history: list[dict]) -> str:
    """The model card: what the model is, what it was trained on, how it did."""
    rolls = summary.get("rolls") or {}
    rows = "\n".join(f"| {h['step']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h.get('lr', float('nan')):.2e} "
                     f"| {h['seconds']:.0f} |" for h in history)
    ema = summary.get("train_config", {}).get("ema")
    weights = f"saved: the weights' moving average, decay {ema}" if summary.get("weights") == "moving average" \
        else "saved: the trained weights"
    return f"""# v2m diffusion model

Backend `diffusion` (models/diffusion.py): a DiT denoiser (Peebles & Xie 2023) over a beat-synchronous
multi-track piano roll ({', '.join(ROLES)}; onset + frame planes; {STEPS_PER_BEAT} steps per beat; MIDI
{PITCH_LOW}..{PITCH_LOW + N_PITCH - 1}), conditioned Diff-V2M style on the rhythm (onset curve on the beat grid),
per-bar controls (density, beat strength, phrase and place in phrase) and affect (mode, register, tempo class) with
timestep-aware fusion (adaLN-Zero + FiLM-gated condition injection); classifier-free guidance by condition dropout
({config.cond_dropout}); v-prediction on a cosine schedule, sampled with DDIM.

- architecture: d_model {config.d_model}, {config.n_layers} layers, {config.n_heads} heads, MLP {config.d_ff},
  window {config.window} steps ({config.window // STEPS_PER_BEAT} beats); {summary['parameters']:,} parameters;
  {"self-conditioned (Analog Bits: the previous step's clean estimate is an input); " if config.self_cond else ""}
  {CHANNELS} roll channels ({len(ROLES)} roles × {PLANES} planes × {N_PITCH} pitches) per step
- data: {rolls.get('pieces', '?')} multi-part pieces of music21's corpus ({rolls.get('steps', '?')} steps,
  {rolls.get('notes', '?')} notes; top part = melody, lowest = bass, the rest = accompaniment), transposition
  augmentation ±{summary['train_config']['transpose']} semitones; validation: every 20th piece
- training: {summary['steps']} steps of batch {summary['train_config']['batch']} on {summary['device']} in
  {summary['seconds']:.0f} s (stopped by {summary['stopped_by']}; cosine learning rate decayed to the end either
  way); loss {summary['first_loss']} → best validation {summary['best_val_loss']} (v-prediction MSE per channel on
  unknown steps; {weights})

| step | train loss | val loss | lr | s |
|---|---|---|---|---|
{rows}

Limits: trained on chorales, motets, madrigals and string quartets — the music sounds like them (vocal
polyphony, functional harmony), not like pop; the rhythm condition is the music's own onsets in training and
the video's peaks at inference (the same scale, not the same source). Retrain with `scripts/train_diffusion.sh`.
"""
