"""The diffusion backend: a DiT denoiser over a beat-synchronous multi-track piano roll, after Diff-V2M
(Ji et al. 2025, "Diff-V2M: a hierarchical conditional diffusion model with explicit rhythmic modeling for
video-to-music generation") and DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

**What is denoised.** A window of `window` steps of a piano roll, STEPS_PER_BEAT steps per beat of the video's
grid (a 16th note in 4/4), N_PITCH pitches (PITCH_LOW..PITCH_HIGH), one pair of planes per role (ROLES: melody,
bass, accompaniment): an onset plane (a note starts here) and a frame plane (a note sounds here), each in {-1, +1}.
The roll is denoised directly, not per-bar latents of a small autoencoder (PhraseVAE-style): a roll window is
only 128 × 432 values, so a DiT over its steps is already cheap (one forward pass ≈ a few ms), and decoding notes
from the roll needs no second learned model whose reconstruction errors (wrong pitches, smeared onsets) would
sit between the rhythm condition and the notes — onsets on the grid are exactly what the rhythm agreement is
measured on. Each step of the window is one token of the transformer.

**Conditions** (`condition_features`): per step, the rhythm condition — the video's onset envelope resampled
onto the beat grid as peaks (in training, the music's own note onsets: Diff-V2M's low-resolution onset
detection function, here on the symbolic side) — the step's place in its beat, bar lines, each beat's strength
class, the bar's density class, phrase starts and the bar's place in its phrase (structure); globally the
affect: mode, register and tempo class. Fusion is timestep-aware, as Diff-V2M's: the timestep embedding plus
the affect embedding drive every block's adaLN-Zero modulation (DiT), and the per-step rhythm/structure features
enter every block through a projection whose scale and gate are FiLM parameters of that same embedding, so how
much the rhythm steers depends on the noise level. (Diff-V2M uses cross-attention for the rhythm; the condition
here is already aligned step for step with the roll, so a per-step addition is that attention with the
identity alignment, at no attention cost.)

**Known context** (inpainting): the model also sees the known part of the window (the previous window's bars
when a long piece is generated in overlapping windows, see stages/generate/diffusion.py) and its mask, and is
trained with random known prefixes, so a continuation agrees with what precedes it.

**Self-conditioning** (Chen et al. 2022, "Analog Bits: generating discrete data using diffusion models with
self-conditioning"; `self_cond`): the denoiser also sees its own clean estimate of the previous sampling step
(zeros at the first), so each step refines the last estimate instead of guessing the roll afresh from the noisy
input; in training half of the windows first get a no-grad estimate from the same noisy input, fed back in.

**Classifier-free guidance** (Ho & Salimans 2022): in training every condition is dropped together with
probability `cond_dropout` (zero features and the null affect); at sampling the conditional and unconditional
predictions are mixed with weight `guidance` (1 = no guidance).

**Sampler**: deterministic DDIM (Song et al. 2021), optionally with Diffusion-LM's clamping trick (Li et al.
2022: each step's clean estimate rounded to the data's values, here {-1, +1}) and a channel constraint, on a cosine schedule (Nichol & Dhariwal 2021) with
v-prediction (Salimans & Ho 2022), `steps` model evaluations (×2 with guidance, batched as one pass). One
torch.Generator seeded from the request draws the initial noise: the same seed gives the same roll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import BACKENDS

STEPS_PER_BEAT = 4
PITCH_LOW, PITCH_HIGH = 24, 95
N_PITCH = PITCH_HIGH - PITCH_LOW + 1
ROLES = ("melody", "bass", "accompaniment")
PLANES = 2  # onset, frame
CHANNELS = len(ROLES) * PLANES * N_PITCH
REGISTERS = ("low", "mid", "high")
MODES = ("major", "minor")
N_TEMPO = 5
PHRASE_PLACES = 8  # bars since the last phrase start, 0..7 (more is 7)
MAX_ACCOMPANIMENT = 4  # simultaneous accompaniment onsets kept per step
N_FEATURES_BASE = 1 + STEPS_PER_BEAT + 1 + 3 + 1 + PHRASE_PLACES + 1  # + n_density (see condition_features)


def register_class(mean_pitch: float) -> int:
    """A melody's mean MIDI pitch → register class 0 low / 1 mid / 2 high (the controls' `register`)."""
    return 0 if mean_pitch < 66 else (1 if mean_pitch <= 72 else 2)


@dataclass(frozen=True)
class DiffusionConfig:
    """The DiT denoiser. Lengths are in grid steps (STEPS_PER_BEAT per beat)."""

    backend: str = "diffusion"
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    d_ff: int = 768
    window: int = 128            # steps denoised at once (32 beats: 8 bars of 4/4)
    n_density: int = 7           # density classes of the tokenizer the controls come from
    cond_dropout: float = 0.1    # classifier-free guidance: share of training windows without conditions
    self_cond: bool = False      # self-conditioning: the previous step's clean estimate is an input (Analog Bits)
    vocab_size: int = 0          # unused (the tokens path needs no logits); kept so generic code can read it

    def __post_init__(self):
        for name, low, high in (("d_model", 8, 4096), ("n_layers", 1, 64), ("n_heads", 1, 64), ("d_ff", 8, 16384),
                                ("window", 8, 4096), ("n_density", 1, 64)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} {getattr(self, name)} is outside {low}..{high}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.backend != "diffusion":
            raise ValueError("a DiffusionConfig is the 'diffusion' backend's")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError("cond_dropout must be in [0, 1)")

    @property
    def n_features(self) -> int:
        return N_FEATURES_BASE + self.n_density

    @property
    def max_len(self) -> int:  # what generic code reads as the model's context
        return self.window


# ---------------------------------------------------------------- the roll and its notes

def notes_to_roll(notes: np.ndarray, steps: int) -> np.ndarray:
    """Notes int [n, 4] (step, duration in steps, MIDI pitch, role) → roll float32 [steps, roles, planes, N_PITCH]
    in {-1, +1}; notes outside the window or the pitch range are left out."""
    roll = -np.ones((steps, len(ROLES), PLANES, N_PITCH), np.float32)
    for step, dur, pitch, role in np.asarray(notes, dtype=np.int64).reshape(-1, 4):
        p = pitch - PITCH_LOW
        if not 0 <= p < N_PITCH or not 0 <= step < steps:
            continue
        roll[step, role, 0, p] = 1.0
        roll[step:min(steps, step + max(1, dur)), role, 1, p] = 1.0
    return roll


def roll_to_notes(roll: np.ndarray, hold: int = 0, rests: dict[int, list[tuple[int, int]]] | None = None) -> np.ndarray:
    """A (denoised) roll [steps, roles, planes, N_PITCH] → notes int64 [n, 4] (step, duration, pitch, role),
    sorted. A note starts where its onset plane is positive and lasts while its frame plane stays positive and no
    new onset of that pitch starts. The melody and the bass are single lines (at a step with several onsets the
    melody keeps the highest, the bass the lowest: the skyline rule), the accompaniment keeps at most
    MAX_ACCOMPANIMENT onsets a step (the likeliest).

    `hold` (steps, 0 = off): legato — a note is also held until its part's next onset, up to `hold` steps from
    its own onset, and not into a span of `rests` ({role: [(first step, end step)]}, e.g. the structure plan's
    breaths). The sampler's frame plane is the weak one: the shipped model places onsets well but its frame
    estimates at mid noise do not follow them (the clean estimate has onsets without their own frame; BENCHMARKS.md,
    issue 21), so frames alone give 16th-note staccato in every part where the corpus holds its notes."""
    steps = roll.shape[0]
    out = []
    for role in range(len(ROLES)):
        onset, frame = roll[:, role, 0, :], roll[:, role, 1, :]
        ending = 0  # a line's next note may not start before its previous note's end (monophony)
        for step in range(steps):
            hits = np.flatnonzero(onset[step] > 0)
            if not len(hits):
                continue
            if role == 0:
                hits = hits[-1:]
            elif role == 1:
                hits = hits[:1]
            else:
                hits = hits[np.argsort(-onset[step, hits], kind="stable")[:MAX_ACCOMPANIMENT]]
            for p in sorted(int(h) for h in hits):
                end = step + 1
                while end < steps and frame[end, p] > 0 and onset[end, p] <= 0:
                    end += 1
                out.append((step, end - step, p + PITCH_LOW, role))
            if role < 2:
                ending = max(ending, step)
    if not out:
        return np.zeros((0, 4), np.int64)
    notes = np.asarray(out, np.int64)
    if hold > 0:
        _hold(notes, hold, rests or {}, steps)
    for role in (0, 1):  # a single line: each note is cut where the next begins
        mine = np.flatnonzero(notes[:, 3] == role)
        for a, b in zip(mine, mine[1:]):
            notes[a, 1] = max(1, min(notes[a, 1], notes[b, 0] - notes[a, 0]))
    return notes[np.lexsort((notes[:, 2], notes[:, 0], notes[:, 3]))]


def _hold(notes: np.ndarray, hold: int, rests: dict[int, list[tuple[int, int]]], steps: int) -> None:
    """roll_to_notes' legato, in place on notes [n, 4] (step, duration, pitch, role)."""
    for role in range(len(ROLES)):
        mine = np.flatnonzero(notes[:, 3] == role)
        starts = np.unique(notes[mine, 0])
        spans = sorted(rests.get(role, []))
        for i in mine:
            step = int(notes[i, 0])
            later = starts[starts > step]
            limit = min(int(later[0]) if len(later) else steps, step + hold, steps)
            for first, _ in spans:
                if step < first < limit:
                    limit = first
                    break
            if not any(a <= step < b for a, b in spans):
                notes[i, 1] = max(int(notes[i, 1]), limit - step)


def condition_features(onsets: np.ndarray, bar_step: np.ndarray, bar_beats: np.ndarray, bar_density: np.ndarray,
                       bar_phrase: np.ndarray, beat_strength: np.ndarray, steps: int, n_density: int) -> np.ndarray:
    """Per-step condition features float32 [steps, n_features] of a piece (or the video's grid):

    rhythm (1: the onset condition in 0..1), the step's place in its beat (STEPS_PER_BEAT one-hot), bar line (1),
    the strength class of a beat starting here (3 one-hot: none/weak/strong), phrase start bar (1), the bar's place
    in its phrase (PHRASE_PLACES one-hot), inside the piece (1), the bar's density class (n_density one-hot).
    `bar_step[i]`: bar i's first step; `beat_strength`: every beat's class, bars concatenated."""
    f = np.zeros((steps, N_FEATURES_BASE + n_density), np.float32)
    f[:, 0] = np.asarray(onsets, np.float32)[:steps]
    f[np.arange(steps), 1 + np.arange(steps) % STEPS_PER_BEAT] = 1.0
    base = 1 + STEPS_PER_BEAT
    place = 0
    beat = 0
    for i, start in enumerate(bar_step):
        start = int(start)
        stop = int(bar_step[i + 1]) if i + 1 < len(bar_step) else steps
        place = 0 if bar_phrase[i] or i == 0 else min(place + 1, PHRASE_PLACES - 1)
        if start >= steps:
            break
        f[start, base] = 1.0
        for k in range(int(bar_beats[i])):
            s = start + k * STEPS_PER_BEAT
            if s < min(stop, steps) and beat + k < len(beat_strength):
                f[s, base + 1 + int(np.clip(beat_strength[beat + k], 0, 2))] = 1.0
        beat += int(bar_beats[i])
        span = slice(start, min(stop, steps))
        f[span, base + 4] = float(bar_phrase[i])
        f[span, base + 5 + place] = 1.0
        f[span, base + 5 + PHRASE_PLACES] = 1.0
        f[span, N_FEATURES_BASE + int(np.clip(bar_density[i], 0, n_density - 1))] = 1.0
    return f


def smooth_onsets(impulses: np.ndarray) -> np.ndarray:
    """An onset impulse train on the grid (0..1 per step) → the rhythm condition: each impulse spread to its
    neighbours at 0.5, the maximum kept (a low-resolution onset curve that tolerates one step of jitter)."""
    x = np.asarray(impulses, np.float32)
    out = x.copy()
    out[1:] = np.maximum(out[1:], 0.5 * x[:-1])
    out[:-1] = np.maximum(out[:-1], 0.5 * x[1:])
    return out


# ---------------------------------------------------------------- the denoiser

def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of continuous t in [0, 1] (scaled to 0..1000 as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention from plain nn.Linear projections (`qkv`, `out`) and torch's fused
    scaled-dot-product kernel: the same arithmetic as nn.MultiheadAttention (whose forward reads its projection
    weights as raw tensors), written so that post-training quantization can swap every projection for a quantized
    layer with an integer kernel (issue 21: all four attention matmuls of a block run in int8 at W8A8)."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    """A DiT block with adaLN-Zero, plus the rhythm/structure injection FiLM-gated by the same embedding."""

    def __init__(self, c: DiffusionConfig):
        super().__init__()
        d = c.d_model
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(d, c.n_heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, c.d_ff), nn.GELU(approximate="tanh"), nn.Linear(c.d_ff, d))
        self.cond = nn.Linear(d, d)
        self.ada = nn.Linear(d, 8 * d)  # shift/scale/gate ×2 (attention, MLP), condition scale and gate
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, mod, cond):
        """`mod`: this block's adaLN modulation, `self.ada(silu(emb))` (Diffusion.modulation)."""
        s1, c1, g1, s2, c2, g2, cs, cg = mod.chunk(8, dim=-1)
        x = x + (1 + cg[:, None]) * self.cond(cond) * (1 + cs[:, None])
        h = _modulate(self.norm1(x), s1, c1)
        x = x + g1[:, None] * self.attn(h)
        return x + g2[:, None] * self.mlp(_modulate(self.norm2(x), s2, c2))


class TimeSlot:
    """Where a sampler keeps one DDIM step's time path (`Diffusion.modulation`) to hand it to the next window's
    call at the same step: empty, the model computes and stores it; filled, the model reads it."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = None


@BACKENDS.register("diffusion")
class Diffusion(nn.Module):
    """The DiT denoiser: (noisy roll, t, known roll + mask, per-step features, affect) → v-prediction."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.inp = nn.Linear((3 if config.self_cond else 2) * CHANNELS + 1, d)
        self.feat = nn.Sequential(nn.Linear(config.n_features, d), nn.SiLU(), nn.Linear(d, d))
        self.pos = nn.Parameter(torch.zeros(config.window, d))
        nn.init.normal_(self.pos, std=0.02)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        # affect: the last index of each table is the null condition (classifier-free guidance)
        self.mode = nn.Embedding(len(MODES) + 1, d)
        self.register_ = nn.Embedding(len(REGISTERS) + 1, d)
        self.tempo = nn.Embedding(N_TEMPO + 1, d)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, CHANNELS)
        for layer in (self.ada, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def modulation(self, t, affect) -> tuple[torch.Tensor, ...]:
        """The time path (TFMQ-DM's temporal features): the timestep embedding plus the affect → every block's
        adaLN modulation and the final layer's, one [B, 8·d] (blocks) / [B, 2·d] (last) tensor each. It depends on
        t and the affect only, so within a piece it is the same for every window at the same DDIM step
        (`ddim_sample`'s `time_cache`)."""
        emb = self.time(timestep_embedding(t, self.config.d_model)) + self.mode(affect[:, 0]) \
            + self.register_(affect[:, 1]) + self.tempo(affect[:, 2])
        e = F.silu(emb)
        return tuple(block.ada(e) for block in self.blocks) + (self.ada(e),)

    def concat_inputs(self) -> dict[str, list[int]]:
        """The Linear layers whose input is a concatenation, with its segments' widths in order: `inp` takes the
        noisy roll (its range follows t: ±4 at the noisiest steps), the known roll with its mask column ({-1, 0,
        1}) and a self-conditioned model's previous estimate ([-1, 1]) — quantization gives each its own activation
        range (Q-Diffusion's split, quant/timestep.py)."""
        return {"inp": [CHANNELS, CHANNELS + 1] + ([CHANNELS] if self.config.self_cond else [])}

    def time_path_per_step(self) -> bool:
        """True when a layer of the time path computes differently at different steps (it says so with a true
        `per_step`, e.g. a quantized layer with activation ranges per timestep group that a hook on this model
        selects at each call): then the time path must be computed inside each step's forward, not for every step
        in one batch (`ddim_sample`)."""
        path = [self.time, self.ada, *(block.ada for block in self.blocks)]
        return any(getattr(m, "per_step", False) for layer in path for m in layer.modules())

    def forward(self, x, t, known, mask, features, affect, x0_prev=None, time_slot: TimeSlot | None = None):
        """x, known [B, T, CHANNELS]; t [B] in [0, 1]; mask [B, T] (1 = known step); features [B, T, n_features];
        affect long [B, 3] (mode, register, tempo class; the table's last index = null) → v [B, T, CHANNELS].
        `x0_prev` [B, T, CHANNELS]: a self-conditioned model's previous clean estimate (None: zeros, the first step).
        `time_slot`: the time path of this (t, affect) kept from an earlier call, or an empty slot to keep it in
        (computed here, inside the forward, so that hooks on the model see it as part of this call)."""
        T = x.shape[1]
        if time_slot is not None and time_slot.value is not None:
            mods = time_slot.value
        else:
            mods = self.modulation(t, affect)
            if time_slot is not None:
                time_slot.value = mods
        parts = [x, known * mask[..., None], mask[..., None]]
        if self.config.self_cond:
            parts.append(torch.zeros_like(x) if x0_prev is None else x0_prev.to(x.dtype))
        h = self.inp(torch.cat(parts, dim=-1)) + self.pos[:T]
        cond = self.feat(features)
        for block, mod in zip(self.blocks, mods):
            h = block(h, mod, cond)
        shift, scale = mods[-1].chunk(2, dim=-1)
        return self.out(_modulate(self.norm(h), shift, scale))


def null_affect(batch: int, device=None) -> torch.Tensor:
    return torch.tensor([[len(MODES), len(REGISTERS), N_TEMPO]] * batch, dtype=torch.long, device=device)


# ---------------------------------------------------------------- schedule, loss, sampler

def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine schedule (Nichol & Dhariwal 2021): alpha_bar(t) = cos²((t + s)/(1 + s) · π/2), s = 0.008."""
    angle = (t.clamp(0.0, 1.0) + 0.008) / 1.008 * math.pi / 2
    return torch.cos(angle), torch.sin(angle)


def diffusion_loss(model: Diffusion, x0, known, mask, features, affect, valid, generator=None):
    """The v-prediction MSE on the unknown, valid steps of a batch of clean rolls `x0` [B, T, CHANNELS]
    (conditions dropped together for `cond_dropout` of the windows)."""
    b = x0.shape[0]
    device = x0.device
    t = torch.rand(b, device=device, generator=generator)
    noise = torch.randn(x0.shape, device=device, generator=generator)
    a, s = alpha_sigma(t)
    xt = a[:, None, None] * x0 + s[:, None, None] * noise
    drop = torch.rand(b, device=device, generator=generator) < model.config.cond_dropout
    features = torch.where(drop[:, None, None], torch.zeros_like(features), features)
    affect = torch.where(drop[:, None], null_affect(b, device), affect)
    x0_prev = None
    if model.config.self_cond:  # Analog Bits: for half of the windows, the model's own estimate as the extra input
        with torch.no_grad():
            first = model(xt, t, known, mask, features, affect)
            estimate = (a[:, None, None] * xt - s[:, None, None] * first.float()).clamp(-1.0, 1.0)
        use = torch.rand(b, device=device, generator=generator) < 0.5
        x0_prev = torch.where(use[:, None, None], estimate, torch.zeros_like(estimate))
    v = model(xt, t, known, mask, features, affect, x0_prev=x0_prev)
    target = a[:, None, None] * noise - s[:, None, None] * x0
    weight = (valid * (1 - mask))[..., None]
    return ((v.float() - target) ** 2 * weight).sum() / (weight.sum() * x0.shape[-1]).clamp(min=1.0)


def scale_channels(pitch_classes) -> torch.Tensor:
    """Bool [CHANNELS]: True on the roll channels (every role and plane) whose pitch is in `pitch_classes`."""
    allowed = torch.tensor([(PITCH_LOW + p) % 12 in set(pitch_classes) for p in range(N_PITCH)])
    return allowed.repeat(len(ROLES) * PLANES)


def guide(v: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance of a model call's output: batch [conditional; unconditional] mixed with weight
    `guidance`; at 1 (no guidance) the call is conditional only and `v` is returned as is."""
    if guidance == 1.0:
        return v
    v_c, v_u = v.chunk(2)
    return v_u + guidance * (v_c - v_u)


@torch.no_grad()
def ddim_sample(model: Diffusion, known, mask, features, affect, *, steps: int, guidance: float,
                generator: torch.Generator, allowed: torch.Tensor | None = None,
                clamp_binary: bool = False, project=None, time_cache: dict | None = None) -> torch.Tensor:
    """Deterministic DDIM (eta 0) from t = 1 to 0 in `steps` steps with classifier-free guidance `guidance`;
    known steps are held at `known` in the result. Shapes as Diffusion.forward; returns x0 [B, T, CHANNELS].

    `clamp_binary`: round each step's clean estimate to {-1, +1} (the clamping trick, see the module docstring).
    `allowed` (bool [CHANNELS], e.g. `scale_channels`, or [T, CHANNELS] per step): a hard constraint — at every step the clean estimate is
    projected onto rolls with no note in the other channels (the diffusion counterpart of the transformer's
    logit masks), so the trajectory, not only the result, lives in the allowed set.
    `project(x0, raw) -> x0`: a last projection of each step's clean estimate (`raw`: before the rounding), e.g. bars
    tied to earlier bars (stages/generate/diffusion_structure.py); the last step returns its result.
    `time_cache`: a dict the caller keeps across the windows of one piece (same steps, guidance, batch and affect):
    the time path (`Diffusion.modulation`: 11 matmuls of the timestep embedding, the same for every window) of
    every step is computed once, for all steps in one batch before the first window's first step (their weights
    read once, not once a step: ~4 ms of a ~25 ms float32 step on the dev box), and reused by every window; a
    model whose time path is step-dependent (`time_path_per_step`) computes it in each step's forward of the first
    window instead, and the later windows reuse that."""
    b, T = known.shape[:2]
    device = known.device
    x = torch.randn((b, T, CHANNELS), device=device, generator=generator, dtype=torch.float32).to(known.dtype)
    times = torch.linspace(1.0, 0.0, steps + 1, device=device)
    guided = guidance != 1.0
    if guided:  # one batched pass for the conditional and the unconditional prediction
        known2, mask2 = torch.cat([known, known]), torch.cat([mask, mask])
        features2 = torch.cat([features, torch.zeros_like(features)])
        affect2 = torch.cat([affect, null_affect(b, device)])
    if time_cache is not None and (steps, guided, 0) not in time_cache and not model.time_path_per_step():
        rows = 2 * b if guided else b  # every step's time path in one batch: [steps × rows]
        mods = model.modulation(times[:-1].repeat_interleave(rows), (affect2 if guided else affect).repeat(steps, 1))
        for i in range(steps):
            time_cache[(steps, guided, i)] = slot = TimeSlot()
            slot.value = tuple(m[i * rows:(i + 1) * rows] for m in mods)
    prev = None  # self-conditioning: the last step's clean estimate (before rounding)
    for i in range(steps):
        t, t_next = times[i], times[i + 1]
        a, s = alpha_sigma(t)
        tt = t.expand(b)
        extra = {} if time_cache is None else {"time_slot": time_cache.setdefault((steps, guided, i), TimeSlot())}
        if prev is not None:
            extra["x0_prev"] = torch.cat([prev, prev]) if guided else prev
        if guided:
            v = guide(model(torch.cat([x, x]), torch.cat([tt, tt]), known2, mask2, features2, affect2, **extra), guidance)
        else:
            v = model(x, tt, known, mask, features, affect, **extra)
        x0 = raw = (a * x - s * v).clamp(-1.0, 1.0)
        if model.config.self_cond:
            prev = raw
        if clamp_binary:  # Diffusion-LM's clamping trick: the estimate rounded to the nearest roll
            x0 = torch.where(x0 > 0, 1.0, -1.0).to(x0.dtype)
        if allowed is not None:
            x0 = torch.where(allowed.to(x0.device), x0, torch.full_like(x0, -1.0))
        if project is not None:
            x0 = project(x0, raw)
        eps = (x - a * x0) / s.clamp(min=1e-4)
        a_next, s_next = alpha_sigma(t_next)
        x = a_next * x0 + s_next * eps
    if project is not None:  # the last step's x is its clean estimate up to s(0) ≈ 0.013 of noise: exact again
        x = project(x, x)
    return torch.where(mask[..., None] > 0, known, x)
