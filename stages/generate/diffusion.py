"""generate with the diffusion backend: controls (from a video) → a multi-track piece (melody, bass, accompaniment)
denoised as a piano roll on the video's beat grid, then written as the same REMI token ids as the transformer's.

1. The grid: each bar of the controls (its own number of beats: pickup bars, scenes in other meters) becomes
   `bars × beats × STEPS_PER_BEAT` steps; bar i starts at step `bar_step[i]`.
2. The conditions (models/diffusion.py `condition_features`): the rhythm condition is the video's onset envelope
   on that grid — the envelope's peaks (the peak-picking rule the density control uses), each put on its nearest
   step with weight 1 (a peak at least as high as the clip's median peak) or 0.5, then smoothed; without an
   envelope, the beats' strength classes. Per bar its density class, beat strengths, phrase start and place in the
   phrase; globally mode, register and tempo class.
3. Windows: the model denoises `window` steps at once. A longer piece is written in windows that start on bar
   lines and overlap: each next window is given the last bars of the previous one (at most half a window) as
   known context (inpainting, models/diffusion.py), so the piece continues rather than restarts every window.
4. Roll → notes (models/diffusion.py `roll_to_notes`) → per role the REMI ids of `ids` (the melody) and
   `parts` (bass, accompaniment): BOS, the global controls, and per bar the same forced opening as the
   transformer's (generate/plan.py `build_plan`: `Bar`, the bar's controls, its time signature), then the notes
   as Position/Pitch/Duration. decode maps bar i onto the video's downbeat i for every part, and the arranger
   adds drums and only the roles the model left empty (arrange/arranger.py).

The sampler uses two projections of the clean estimate at every DDIM step (models/diffusion.py `ddim_sample`):
the clamping trick of Diffusion-LM (Li et al. 2022) — the estimate rounded to the roll's two values, {-1, +1} —
without which the few-step trajectory drifts into a roll with an onset at nearly every step (measured: 3–6× the
notes of real windows of the same conditions, BENCHMARKS.md issue 20), and the scale constraint (the mode's
scale, SCALES; `DiffusionSettings.scale`), the diffusion counterpart of the transformer's logit masks: the shipped
model, trained 132 s, learned where notes go (rhythm, density, texture, registers) but not yet which pitch classes
belong together.

Same controls, model, settings and seed → the same ids: one torch.Generator seeded by `seed` draws every noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from v2m.errors import V2MError
from v2m.models.diffusion import (
    MODES,
    N_PITCH,
    REGISTERS,
    ROLES,
    STEPS_PER_BEAT,
    condition_features,
    ddim_sample,
    roll_to_notes,
    scale_channels,
    smooth_onsets,
)
from v2m.stages.generate.diffusion_structure import RestatedBars, endings, restatements
from v2m.stages.generate.plan import STEPS_PER_BEAT as POSITIONS_PER_BEAT
from v2m.stages.generate.plan import NoteTokens, build_plan, extend_grid
from v2m.stages.tokens.controls import PEAK_PICKING
from v2m.stages.tokens.structure import bar_beats, check_structure, plan_structure
from v2m.stages.tokens.video_controls import pick_peaks

# the scale constraint: pitch classes of the key the piece is written in (the video gives the mode, not a tonic:
# C major, A natural minor), and the minor's raised leading tone G♯, allowed only in the bars that end a phrase on
# a cadence and the final bar (the dominant before the tonic: harmonic minor where it cadences). With G♯ allowed
# everywhere the model used G and G♯ alike (it does not know keys), and a minor piece measured 0.90 in-scale
# where the corpus is ≥ 0.915 (BENCHMARKS.md, issue 21).
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (9, 11, 0, 2, 4, 5, 7)}
LEADING_TONES = {"minor": (8,)}
TRIADS = {"major": (0, 4, 7), "minor": (9, 0, 4)}  # the tonic triads of those keys, tonic first (cadences, final)
HOLD = 3 * STEPS_PER_BEAT  # legato: a note is held to its part's next onset, at most three beats (roll_ids)
DEFAULT_STEPS = 10  # 10, 20 and 50 give the same rolls with the clamping trick (BENCHMARKS.md, issue 20)
DEFAULT_GUIDANCE = 3.0  # 20 synthetic videos, guidance 1.5 / 2 / 3 / 4: onset F 0.54 / 0.54 / 0.56 / 0.56, groove 0.90 / 0.91 / 0.93 / 0.93
MAX_STEPS = 1000


@dataclass(frozen=True)
class DiffusionSettings:
    """The sampler's settings: DDIM `steps` (model evaluations; ×2 work with guidance) and the classifier-free
    `guidance` weight (1 = none; higher follows the rhythm and controls more closely)."""

    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    scale: bool = True  # constrain pitches to the mode's scale (C major / A natural minor, G# in cadences)
    meter: bool = True  # onsets off the eighth-note grid only on the video's own peaks (`constraints`)
    structure: bool = True  # restated bars of the structure plan written from their sources (diffusion_structure.py)

    def __post_init__(self):
        if not 1 <= int(self.steps) <= MAX_STEPS:
            raise ValueError(f"--steps {self.steps}: the diffusion sampler needs 1..{MAX_STEPS} steps (e.g. 20)")
        if not 0.0 <= float(self.guidance) <= 20.0:
            raise ValueError(f"--guidance {self.guidance}: expected 0..20 (1 = no guidance, e.g. 3)")


def diffusion_settings(steps: int | None, guidance: float | None) -> DiffusionSettings:
    """Settings from command-line values (None = the default); a bad value is one line."""
    try:
        return DiffusionSettings(DEFAULT_STEPS if steps is None else int(steps),
                                 DEFAULT_GUIDANCE if guidance is None else float(guidance))
    except ValueError as e:
        raise V2MError(str(e)) from None


# ---------------------------------------------------------------- conditions on the grid

def grid_steps(controls: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bar_step [bars], bar beats [bars], step_times s [steps + 1]) of a controls payload's grid."""
    beats = np.asarray(bar_beats(controls), np.int64)
    bar_step = np.concatenate([[0], np.cumsum(beats)[:-1]]) * STEPS_PER_BEAT
    total_beats = int(beats.sum())
    times = [float(t) for t in controls.get("beat_times") or []]
    period = float(np.median(np.diff(times))) if len(times) >= 2 else 60.0 / float(controls.get("tempo_bpm") or 120)
    start = float(controls["downbeats"][0]) if controls.get("downbeats") else (times[0] if times else 0.0)
    times = [t for t in times if t >= start - 1e-6] or [start]
    while len(times) < total_beats + 1:
        times.append(times[-1] + period)
    times = np.asarray(times[:total_beats + 1])
    fractions = np.arange(STEPS_PER_BEAT) / STEPS_PER_BEAT
    step_times = (times[:-1, None] + np.diff(times)[:, None] * fractions[None]).ravel()
    return bar_step, beats, np.append(step_times, times[-1])


def rhythm_condition(controls: dict, step_times: np.ndarray, stats: dict) -> np.ndarray:
    """The rhythm condition per step (see the module docstring)."""
    steps = len(step_times) - 1
    impulses = np.zeros(steps, np.float32)
    rhythm = controls.get("rhythm") or {}
    envelope = np.asarray(rhythm.get("envelope") or [], np.float64)
    rate = float(rhythm.get("frame_rate") or 0.0)
    if envelope.size >= 3 and rate > 0:
        peaks = pick_peaks(envelope, rate, stats.get("peak_picking", PEAK_PICKING))
        if len(peaks):
            heights = envelope[peaks]
            middle = float(np.median(heights))
            centres = (step_times[:-1] + step_times[1:]) / 2
            for frame, height in zip(peaks, heights):
                t = frame / rate
                if step_times[0] - 0.05 <= t < step_times[-1]:
                    step = int(np.clip(np.searchsorted(centres, t), 0, steps - 1))
                    if step > 0 and abs(step_times[step - 1] - t) < abs(step_times[step] - t):
                        step -= 1
                    impulses[step] = max(impulses[step], 1.0 if height >= middle else 0.5)
            return smooth_onsets(impulses)
    beat = 0  # no envelope: the beats' strength classes
    for bar in controls["bars"]:
        for k, s in enumerate(bar.get("strength") or []):
            at = (beat + k) * STEPS_PER_BEAT
            if at < steps:
                impulses[at] = {0: 0.0, 1: 0.5}.get(int(s), 1.0)
        beat += int(bar.get("beats", controls["meter"]))
    return smooth_onsets(impulses)


def piece_conditions(controls: dict, n_density: int, stats: dict) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(features [steps, n_features], bar_step, affect [mode, register, tempo class]) for a controls payload."""
    bar_step, beats, step_times = grid_steps(controls)
    steps = int(beats.sum()) * STEPS_PER_BEAT
    bars = controls["bars"]
    strengths = np.asarray([int(s) for bar, n in zip(bars, beats) for s in (list(bar.get("strength") or []) + [0] * n)[:n]],
                           np.int64)
    features = condition_features(rhythm_condition(controls, step_times, stats), bar_step, beats,
                                  np.asarray([int(b.get("density", 0)) for b in bars]),
                                  np.asarray([bool(b.get("phrase")) for b in bars]), strengths, steps, n_density)
    mode = MODES.index(controls.get("mode")) if controls.get("mode") in MODES else 0
    register = REGISTERS.index(controls.get("register")) if controls.get("register") in REGISTERS else 1
    return features, bar_step, [mode, register, int(controls.get("tempo_class", 2))]


def windows(bar_step: np.ndarray, steps: int, window: int) -> list[tuple[int, int, int]]:
    """[(first step, known steps, end step)]: windows on bar lines covering the piece, each after the first
    starting with the last bars of the previous window (≤ half a window) as its known context. The last window
    ends at the piece's end and takes as much context as fits (≤ half a window) when that is at least a quarter
    window: a rest shorter than half a window costs no window of its own (a 30 s clip: 2 windows, not 3)."""
    lines = list(int(s) for s in bar_step) + [steps]
    out, start, known = [], 0, 0
    while True:
        end = max((s for s in lines if start < s <= start + window), default=min(start + window, steps))
        out.append((start, known, end))
        if end >= steps:
            return out
        last = [s for s in lines if max(steps - window, end - window // 2) <= s <= end - window // 4]
        if last:
            start, known = last[0], end - last[0]
            continue
        context = [s for s in lines if end - window // 2 <= s < end]
        nxt = context[0] if context else end
        start, known = nxt, end - nxt


# ---------------------------------------------------------------- sampling

def constraints(controls: dict, features: np.ndarray, ends: list, settings: DiffusionSettings) -> torch.Tensor | None:
    """Bool [steps, CHANNELS]: where the sampler may write (models/diffusion.py `ddim_sample`'s `allowed`), None
    for no constraint.

    - scale (`settings.scale`): every plane's pitches in the mode's scale (SCALES), the minor's leading tone
      (LEADING_TONES) also in the bars that cadence and in the final bar;
    - meter (`settings.meter`): an onset on a sixteenth off the eighth-note grid only where the video has a full
      peak of its own on that step (rhythm condition 1). The corpus puts 96 % of its onsets on the eighth grid
      (68 % on beats, 27 % on the off-beat eighths, 4 % on the other sixteenths; 200 pieces of the roll set);
      the sampler, whose clamping trick fixes the blurry early estimates, put them on all four sixteenths alike
      (26/23/26/24 % on 12 clips), which no peak of the video asked for (its peaks: 57 % on beats). Measured on
      20 synthetic videos: onset F against the video's beats 0.39 → 0.54 (BENCHMARKS.md, issue 21). It costs the
      per-bar density control (within one class 0.70 → 0.48 in process): letting the densest class's bars use every
      sixteenth gave that back (0.70) but cost as much rhythm agreement (all parts' onset F 0.54 → 0.46) and put
      groove under the corpus range (0.920), so it was not kept."""
    steps = len(features)
    if not (settings.scale or settings.meter):
        return None
    allowed = torch.ones((steps, len(ROLES) * 2 * N_PITCH), dtype=torch.bool)
    if settings.scale:
        scale = SCALES.get(controls.get("mode"), SCALES["major"])
        allowed[:] = scale_channels(scale)
        leading = scale_channels(scale + LEADING_TONES.get(controls.get("mode"), ()))
        for e in ends:
            if e.cadence or e.final:
                allowed[e.start:e.start + e.length] = leading
    if settings.meter:
        off = torch.as_tensor((np.arange(steps) % (STEPS_PER_BEAT // 2) == 1) & (features[:, 0] < 1.0))
        for role in range(len(ROLES)):  # the onset plane of each role
            allowed[off, role * 2 * N_PITCH:role * 2 * N_PITCH + N_PITCH] = False
    return allowed


def sample_rolls(model, controls: dict, stats: dict, settings: DiffusionSettings, seed: int, samples: int = 1,
                 progress=None, share_time_path: bool = True) -> np.ndarray:
    """The piece's denoised rolls [samples, steps, roles, planes, pitches] (window by window, see `windows`).
    `share_time_path`: each DDIM step's time path computed once for all windows (`ddim_sample`'s `time_cache`);
    False computes it inside every model call, as a calibration that records each call's layers needs."""
    config = model.config
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    features, bar_step, affect = piece_conditions(controls, config.n_density, stats)
    steps, W = len(features), config.window
    scale = SCALES.get(controls.get("mode"), SCALES["major"])
    beats = np.asarray(bar_beats(controls))
    restated = restatements(controls.get("structure"), bar_step, beats, STEPS_PER_BEAT) if settings.structure else []
    ends = endings(controls.get("structure"), bar_step, beats, STEPS_PER_BEAT) if settings.structure else []
    triad = TRIADS["minor" if controls.get("mode") == "minor" else "major"]
    channels = model.out.out_features
    roll = -torch.ones((samples, steps, channels), dtype=torch.float32)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    affect_t = torch.tensor([affect] * samples, dtype=torch.long, device=device)
    plan = windows(bar_step, steps, W)
    allowed = constraints(controls, features, ends, settings)  # [steps, channels] or None
    time_cache = {} if share_time_path else None  # each DDIM step's time path, made once, reused by every window
    scale_pitches = scale_channels(scale)[:N_PITCH] if settings.scale else None  # what a varied bar's melody may use
    for index, (start, known, end) in enumerate(plan):
        n = end - start
        x_known = torch.full((samples, W, channels), -1.0)
        x_known[:, :n] = roll[:, start:end]
        mask = torch.zeros((samples, W))
        mask[:, :known] = 1.0
        feats = torch.zeros((samples, W, features.shape[1]))
        feats[:, :n] = torch.as_tensor(features[start:end])
        tied = RestatedBars(restated, start, known, end, roll, scale, scale_pitches, ends, triad)
        tied.known(x_known, mask)
        window_allowed = None
        if allowed is not None:
            window_allowed = torch.ones((W, channels), dtype=torch.bool)
            window_allowed[:n] = allowed[start:end]
        x0 = ddim_sample(model, x_known.to(device, dtype), mask.to(device, dtype), feats.to(device, dtype), affect_t,
                         steps=settings.steps, guidance=settings.guidance, generator=generator,
                         allowed=None if window_allowed is None else window_allowed.to(device),
                         clamp_binary=True, project=tied if tied else None, time_cache=time_cache)
        roll[:, start + known:end] = x0[:, known:n].float().cpu()
        if progress is not None:
            progress(index + 1, len(plan))
    return roll.view(samples, steps, len(ROLES), 2, -1).numpy()


def role_ids(notes: np.ndarray, role: int, plan, bar_step: np.ndarray, tokens: NoteTokens, eos: int) -> list[int]:
    """One role's notes → REMI ids: the plan's head, each bar's forced opening and its notes, EOS."""
    mine = notes[notes[:, 3] == role]
    ids = list(plan.head)
    bar_of = np.searchsorted(bar_step, mine[:, 0], side="right") - 1
    scale = POSITIONS_PER_BEAT // STEPS_PER_BEAT
    for i, opening in enumerate(plan.bars):
        ids.extend(opening)
        last = None
        for step, dur, pitch, _ in mine[bar_of == i]:
            at = int(step - bar_step[i]) * scale
            if at not in tokens.position_id or int(pitch) not in tokens.pitch_id:
                continue
            if at != last:
                ids.append(tokens.position_id[at])
                last = at
            ids += [tokens.pitch_id[int(pitch)], tokens.duration_token(int(dur) * scale)]
    return ids + [eos]


def roll_ids(roll: np.ndarray, controls: dict, vocab) -> dict[str, list[int]]:
    """A roll [steps, roles, planes, pitches] on the controls' grid → {role: ids}: notes held legato up to HOLD
    steps (models/diffusion.py roll_to_notes), the melody not into the plan's breaths."""
    bar_step, beats, _ = grid_steps(controls)
    breaths = [(e.start + e.length - e.breath_steps(), e.start + e.length)
               for e in endings(controls.get("structure"), bar_step, beats, STEPS_PER_BEAT) if e.breath]
    notes = roll_to_notes(roll, hold=HOLD, rests={0: breaths})
    plan = build_plan(controls, vocab)
    tokens = NoteTokens(vocab)
    return {role: role_ids(notes, r, plan, bar_step, tokens, vocab.eos) for r, role in enumerate(ROLES)}


def prepare_controls(controls: dict, bars: int | None = None) -> dict:
    """Controls as the sampler takes them: `bars` bars (None: the video's own; generate/plan.py `extend_grid`
    cuts or extends the grid, and a structure planned for other bars is dropped) with a structure plan (the
    controls' own, checked, or one planned here)."""
    if bars is not None or not controls.get("bars"):
        controls = extend_grid(controls, bars or len(controls.get("bars", [])))
        controls.pop("structure", None)
    if controls.get("structure") is not None:
        check_structure(controls["structure"], len(controls["bars"]), bar_beats(controls))
        return controls
    return {**controls, "structure": plan_structure(controls)}


def generate_diffusion(model, vocab, controls: dict, settings: DiffusionSettings, *, seed: int = 0,
                       num_samples: int = 1, bars: int | None = None, progress=None) -> dict:
    """Controls data (a v2m.controls payload) → a v2m.tokens payload whose `ids` are the melody and whose
    `parts` hold the bass and the accompaniment (REMI ids on the same bars)."""
    if vocab.hash != controls.get("tokenizer_hash", vocab.hash):
        raise V2MError("the controls were made with another tokenizer than the model's",
                       "re-run `v2m encode-tokens RHYTHM.json --tokenizer` with the model's tokenizer, "
                       "or generate from the rhythm artifact")
    controls = prepare_controls(controls, bars)
    if int(model.config.n_density) != int(vocab.stats["n_density"]):
        raise V2MError(f"the diffusion model was trained for {model.config.n_density} density classes, its "
                       f"tokenizer has {vocab.stats['n_density']}", "the checkpoint is inconsistent; retrain it")
    rolls = sample_rolls(model, controls, vocab.stats, settings, seed, num_samples, progress=progress)
    pieces = [roll_ids(roll, controls, vocab) for roll in rolls]
    data = {"tokenizer_hash": vocab.hash, "ids": pieces[0]["melody"],
            "parts": {role: pieces[0][role] for role in ROLES[1:]}, "meter": int(controls["meter"]),
            "beat_times": controls["beat_times"], "downbeats": controls["downbeats"], "controls": controls,
            "diffusion": {"steps": settings.steps, "guidance": settings.guidance,
                          "windows": len(windows(grid_steps(controls)[0], len(rolls[0]), model.config.window))}}
    if len(pieces) > 1:
        data["samples"] = [p["melody"] for p in pieces[1:]]
    return data
