"""evaluate's model mode for a diffusion checkpoint (issue 21; `evaluate_diffusion`, handed to
v2m.stages.evaluate by the CLI: sampling needs stages.generate, which imports stages.evaluate): a (quantized) denoiser against its float reference on
controls, not on a token corpus.

For each controls payload (`--corpus` is then a v2m.controls file or a folder of them) the model and the
reference sample the piece from the same seed and the same initial noise, and the report gives:

- v_err: per-step v-prediction error ||v_q − v_f||² / ||v_f||², mean over the calls of the reference's own
  sampling of the piece (guided; every window, continuations with their known context included) — the
  PTQ4DM/Q-Diffusion measure of what a quantizer does to one step;
- note_f1: note-level F1 (step, pitch, role) of the model's final piece against the reference's;
- onset_f1: the piece's note onsets against the video's beats; pitch_class_entropy, scale_consistency,
  groove_consistency, polyphony: music statistics of the piece (stages/evaluate/music_metrics.py);
- size_mb, size_ratio, sample_ms_step (CPU/GPU time per DDIM step of one guided window, median), sample_speedup
  (reference time ÷ model time, measured alternately in one process).
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from v2m import artifacts, log
from v2m.errors import V2MError
from v2m.models.diffusion import CHANNELS, TimeSlot, guide, null_affect, roll_to_notes
from v2m.quant.qalora import relative_error
from v2m.stages.generate.diffusion import DEFAULT_GUIDANCE, DiffusionSettings, prepare_controls, roll_ids, sample_rolls

STATS = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "polyphony")


@torch.no_grad()
def sample_comparing(model, reference, controls: dict, stats: dict, settings: DiffusionSettings,
                     seed: int) -> tuple[list[float], np.ndarray]:
    """(||v_q − v_f||² / ||v_f||² of every reference call, the reference's roll): the reference samples the piece
    as generate does (`sample_rolls` on `prepared` controls: every window with its known context, the constraints,
    the clamping trick, self-conditioning) and at each of its calls the model predicts from the same inputs — the
    error of the guided prediction along the reference's own trajectory (PTQ4DM/Q-Diffusion's per-step error)."""
    errors = []

    def compare(_m, args, kwargs, output):
        tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}  # not the reference's time path
        errors.append(float(relative_error(guide(model(*args, **tensors), settings.guidance),
                                           guide(output, settings.guidance))))

    handle = reference.register_forward_hook(compare, with_kwargs=True)
    try:
        roll = sample_rolls(reference, prepared(controls), stats, settings, seed, share_time_path=False)[0]
    finally:
        handle.remove()
    return errors, roll


def v_error(model, reference, controls: dict, stats: dict, steps: int, guidance: float, seed: int) -> float:
    """Mean per-step v error of `model` against `reference` over the piece (`sample_comparing`)."""
    errors, _ = sample_comparing(model, reference, controls, stats, DiffusionSettings(steps, guidance), seed)
    return float(np.mean(errors))


def prepared(controls: dict) -> dict:
    """The controls as generate samples them: the video's bars, a structure plan made afresh."""
    return prepare_controls(copy.deepcopy(controls), len(controls["bars"]))


def note_set(roll) -> set:
    return {(int(s), int(p), int(r)) for s, _, p, r in roll_to_notes(roll)}


def note_f1(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return 2 * len(a & b) / max(1, len(a) + len(b))


def piece(model, vocab, controls: dict, settings: DiffusionSettings, seed: int):
    """(roll, tokens data as generate writes them, seconds of sampling) for one controls payload."""
    c = prepared(controls)
    started = time.perf_counter()
    roll = sample_rolls(model, c, vocab.stats, settings, seed)[0]
    seconds = time.perf_counter() - started
    ids = roll_ids(roll, c, vocab)
    data = {"tokenizer_hash": vocab.hash, "ids": ids["melody"], "parts": {k: v for k, v in ids.items() if k != "melody"},
            "meter": int(c["meter"]), "beat_times": c["beat_times"], "downbeats": c["downbeats"], "controls": c}
    return roll, data, seconds


def piece_metrics(data: dict, vocab) -> dict:
    """onset_f1 (all parts' onsets vs the video's beats) and the music statistics of one piece."""
    from v2m.stages.decode.render import music_score
    from v2m.stages.evaluate.beat_metrics import beat_f_measure, merge_onsets
    from v2m.stages.evaluate.music_metrics import music_statistics

    score, _ = music_score({**data, "arrange": None}, vocab)
    seconds = score.to("second")
    onsets = np.unique(np.concatenate([t.notes.numpy()["time"] for t in seconds.tracks] or [np.zeros(0)]))
    out = {"onset_f1": float(beat_f_measure(data["beat_times"], merge_onsets(onsets)).f1) if len(onsets) else 0.0}
    s = music_statistics(score)
    out.update({k: s.get(k) for k in STATS})
    return out


@torch.no_grad()
def step_ms(model, window: int, n_features: int, repeats: int = 5) -> float:
    """Median time (ms) of one guided DDIM step's model call (batch 2 × window), as the sampler makes it: the time
    path (`Diffusion.modulation`) kept from the first call — `sample_rolls` computes it once per step for a whole
    piece — unless the model's time path is step-dependent (`time_path_per_step`), which the sampler computes in
    every first-window call."""
    x = torch.randn(2, window, CHANNELS)
    args = (x, torch.full((2,), 0.5), torch.zeros_like(x), torch.zeros(2, window), torch.zeros(2, window, n_features),
            null_affect(2))
    slot = TimeSlot()
    model(*args, time_slot=slot)
    keep = {} if model.time_path_per_step() else {"time_slot": slot}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model(*args, **keep)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def diffusion_model_metrics(loaded, controls: list[dict], vocab, size_bytes: int, reference=None,
                            reference_size_bytes: int | None = None, steps: int = 20, seed: int = 0,
                            measure_speed: bool = True) -> dict:
    """The metrics of the module docstring as {name: float} (reference-relative ones only with a reference)."""
    settings = DiffusionSettings(steps, DEFAULT_GUIDANCE)
    rows: dict[str, list] = {}
    for i, c in enumerate(controls):
        roll, data, _ = piece(loaded.model, vocab, c, settings, seed + i)
        for k, v in piece_metrics(data, vocab).items():
            if v is not None and np.isfinite(v):
                rows.setdefault(k, []).append(v)
        if reference is not None:
            errors, ref_roll = sample_comparing(loaded.model, reference.model, c, vocab.stats, settings, seed + i)
            rows.setdefault("note_f1", []).append(note_f1(note_set(roll), note_set(ref_roll)))
            rows.setdefault("v_err", []).append(float(np.mean(errors)))
    metrics = {k: float(np.mean(v)) for k, v in rows.items()}
    metrics["size_mb"] = size_bytes / 1e6
    if reference is not None and reference_size_bytes:
        metrics["size_ratio"] = size_bytes / reference_size_bytes
    if measure_speed:
        config = loaded.config
        mine, theirs = [], []
        for _ in range(3):  # alternately, so a busy machine slows both alike
            mine.append(step_ms(loaded.model, config.window, config.n_features))
            if reference is not None:
                theirs.append(step_ms(reference.model, config.window, config.n_features))
        metrics["sample_ms_step"] = statistics.median(mine)
        if theirs:
            metrics["sample_speedup"] = statistics.median(theirs) / metrics["sample_ms_step"]
    return metrics


def evaluate_diffusion(model: str, controls: str, reference: str | None, *, speed: bool, device: str,
                        kernel: str) -> tuple[dict, list]:
    """Model mode for a diffusion checkpoint: `--corpus` is controls (a v2m.controls file or folder), the metrics
    are this module's (per-step v error and note F1 against `reference`, statistics,
    onset F, size, time per step)."""
    from v2m.checkpoint import read_meta
    from v2m.models.loading import load_model
    from v2m.stages.quantize_diffusion import read_controls
    from v2m.stages.session import check_kernel
    from v2m.stages.tokens.vocab import load_tokenizer

    check_kernel(kernel)
    if reference is not None and read_meta(reference).get("backend") != "diffusion":
        raise V2MError(f"{reference} is not a diffusion checkpoint", "compare a diffusion model with a diffusion reference")
    payloads = read_controls(controls)
    loaded = load_model(model, device=device, kernel=kernel)
    ref = load_model(reference, device=device) if reference is not None else None
    vocab = load_tokenizer(loaded.meta["tokenizer"])
    log.info(f"sampling {model} on {len(payloads)} controls from {controls}" + (f" against {reference}" if reference else ""))
    metrics = diffusion_model_metrics(loaded, payloads, vocab, Path(model).stat().st_size, reference=ref,
                                      reference_size_bytes=Path(reference).stat().st_size if reference else None,
                                      measure_speed=speed)
    sources = [artifacts.source_of(model, path=model)]
    if reference:
        sources.append(artifacts.source_of(reference, path=reference))
    return metrics, sources
