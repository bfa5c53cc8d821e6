"""Scenes and the beat plan: the beat grid of edited footage, read the way a film editor scores it.

A video is cut into *scenes* — at hard cuts, and inside a shot where the motion's tempo changes (a tempogram
change point) — and neighbouring spans whose tempi agree are joined again, so a steady pulse across cuts is
tracked as one (as before scenes existed). Each scene gets its own tempo, confidence, beats, meter and
downbeats.

Where a scene's pulse is confident, its tracked beats are the grid (`sync` "pulse"). Where it is weak — the usual
case for real footage: camera moves, a few impacts, no steady pulse — the grid is *planned* (`sync` "cuts"):
every cut falls on a downbeat (each shot holds a whole number of beats, the first on the cut), the strongest
motion hits are drawn onto beats where the choice of tempo allows, and the tempo suits the footage's pace
(more motion, faster) within a musical range. Tempo changes between planned shots are bounded (STEP_LIMIT per
cut, except where a shot is too short to allow it) and penalised beyond that, so the music changes pace with
the picture without lurching.

Confidence is the comb contrast of the tempo estimate (tempo.py) times an activity gate: a still frame, a
static shot or sensor noise has no motion worth a pulse, whatever the normalised envelope's shape suggests
(codec flicker at a keyframe interval is periodic too). A scene keeps its pulse when it is confident for its
length and steady — the pulse shows in both halves of the scene (`confident`).

Units: envelope index = analysis frame, `rate` frames per second, times in seconds, tempo in BPM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from v2m.stages.rhythm import tempo as tempo_mod

SYNCS = ("auto", "pulse", "cuts")
# a scene of PULSE_SECONDS or more keeps its pulse at or above this ("auto"); below, its grid is planned. Per onset
# method: frame differences read a steady pan's reversals weakly (long pans at 0.087–0.093) where shots of camera
# moves and impacts without a pulse read up to 0.078; flow reads pans at 0.29+, such shots up to 0.13
PULSE_CONFIDENCE = {"flow": 0.15, "diff": 0.085, "audio": 0.15}
PULSE_SECONDS = 8.0  # shorter scenes read less surely: they need a confidence higher by sqrt(PULSE_SECONDS / length)
STEADY = 0.09  # and a shorter scene's pulse must go on through it: its comb contrast in each half at least this
# a longer scene's halves at least this (per method): frame differences read shots of camera moves and impacts up
# to 0.19 where one half holds the "pulse" (halves ≤ 0.051 in 8 of 10 such scenes, bench/edit_accuracy.py), real
# pulses of 15–25 s at ≥ 0.107 (bench/rhythm_accuracy.py); flow tells them apart by confidence alone (a joined
# scene read at an octave can have a weak half: 0.039)
LONG_STEADY = {"flow": 0.0, "diff": 0.06, "audio": 0.0}
MIN_SCENE = 3.0  # s: a span shorter than this has no tempo of its own
AGREE = 0.05  # neighbouring spans whose tempi differ by less (relatively) are one scene
TEMPOGRAM_WINDOW, TEMPOGRAM_HOP = 4.0, 0.5  # s: the local tempo estimates change points are found on
CHANGE_RATIO = 1.08  # a tempo change point needs the two sides' tempi this far apart
CHANGE_DISTANCE = 0.25  # and their mean tempogram columns this far apart (1 - cosine)
SNAP = 1.5  # s: a change point this close to a cut is the cut
GOES_ON = 0.25  # a weak shot stays in a pulsing scene when its comb at the scene's tempo is this share of the scene's
HOLD = 6.0  # s: a weak shot shorter than this after a pulsing scene stays in it
STEP_LIMIT = 1.25  # planned tempo changes at a cut stay within ×/÷ this when the shots allow it
PLAN_RANGE = (60.0, 160.0)  # BPM a planned grid keeps to
HIT_WINDOW = 0.07  # s: a hit this close to a beat is on it (the beat F-measure's tolerance)
RUBATO = 0.2  # a planned beat moves onto a strong hit at most this share of a period (the beats around re-spaced)
# activity gate (video): the onset strength's 99.5th percentile (sparse impacts and flashes count) and the motion
# magnitude's 95th, each no pulse below its floor and full above floor + span; per onset method, whose raw units
# differ. Measured on held stills with pixel noise and codec flicker (x264 crf 20–40, keyframes every 10–30
# frames: a periodic flicker the comb reads as 94 BPM at 0.71 without the gate): onset ≤ 0.20 flow / 0.0035 diff,
# motion ≤ 0.023 / 0.0035 (heavy noise, σ 15: 0.44 / 0.0043 and 0.08 / 0.0099, left to the confidence: ≤ 0.12);
# on moving footage onset ≥ 0.295 / 0.0043 (a small slow pan in a montage: motion 0.015 / 0.0079), 0.51 / 0.0128
# for a small slow bounce — a flash-only shot has little motion but onsets of 1.3 / 0.2, a steady pan small onsets
# but plenty of motion
ACTIVITY = {"flow": ((0.2, 0.1), (0.03, 0.04)), "diff": ((0.004, 0.006), (0.004, 0.004))}
ACTIVITY_PERCENTILES = (99.5, 95)


@dataclass
class Scene:
    """A span of the video [start, end) in frames, and what was read or planned for it."""

    start: int
    end: int
    bpm: float = float("nan")
    confidence: float = 0.0
    beats: np.ndarray | None = None  # seconds
    meter: int = 4
    phase: int = 0  # index of the first downbeat among `beats`
    sync: str = "pulse"
    steady: float = 0.0  # the weaker half's comb contrast at the scene's tempo (read_pulse)
    activity: float = 1.0  # the activity gate (0: nothing moves, so no hits either)

    def seconds(self, rate: float) -> float:
        return (self.end - self.start) / rate


def activity_gate(raw_onset: np.ndarray | None, motion: np.ndarray | None = None, method: str = "flow") -> float:
    """0..1: how much a span moves at all, by its onsets or its motion (1 when unknown, e.g. for audio)."""
    if raw_onset is None or len(raw_onset) == 0 or method not in ACTIVITY:
        return 1.0
    gates = []
    for series, (floor, span), percentile in zip((raw_onset, motion), ACTIVITY[method], ACTIVITY_PERCENTILES):
        if series is not None and len(series):
            gates.append(float(np.clip((np.percentile(series, percentile) - floor) / span, 0.0, 1.0)))
    return max(gates)


def _same_tempo(a: float, b: float, tolerance: float = AGREE) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a / b - 1) < tolerance


def required_confidence(seconds: float, method: str = "flow") -> float:
    """The confidence a scene needs to keep its own pulse: PULSE_CONFIDENCE, more for a short scene."""
    return PULSE_CONFIDENCE.get(method, PULSE_CONFIDENCE["flow"]) * max(1.0, math.sqrt(PULSE_SECONDS / max(seconds, 1e-3)))


def confident(scene: Scene, rate: float, method: str = "flow") -> bool:
    """Whether a read scene keeps its own pulse: confident enough for its length, and steady through it (a few
    impacts in one half of a short shot can look like a pulse to the comb; a pulse shows in both halves): STEADY
    below PULSE_SECONDS, LONG_STEADY of the method above.

    Measured on v2m.montage scenes (bench/edit_accuracy.py): of 30 shots without a pulse, the most confident
    read 0.23 with its weaker half at 0.08; real pulses of 5–11 s read 0.18–0.72 with halves at 0.05–0.59."""
    seconds = scene.seconds(rate)
    steady = STEADY if seconds < PULSE_SECONDS else LONG_STEADY.get(method, 0.0)
    return (scene.beats is not None and len(scene.beats) >= 2 and scene.confidence >= required_confidence(seconds, method)
            and scene.steady >= steady)


# ---------------------------------------------------------------- where scenes start and end

def spans(n: int, rate: float, cuts: list[int], levelled: np.ndarray, tempo_range, method: str = "flow"
          ) -> list[tuple[int, int]]:
    """[start, end) frame spans: the whole video, split at a cut only where the picture shows a change, then at
    tempo change points inside the scenes that keep a pulse.

    Scenes are built shot by shot. A shot too short to read (< MIN_SCENE) joins the scene before it; so does a
    shot whose own pulse is weak after a pulsing scene, if it is shorter than HOLD or the scene's pulse goes on
    through it (its comb contrast at the scene's tempo at least GOES_ON of the scene's confidence) — a steady
    pulse across cuts stays one scene, tracked as one. A cut splits where both sides pulse confidently at different tempi (not the same within AGREE, not
    an octave apart), where a pulse starts or stops, and where a weak run begins; weak shots after weak shots
    join (a run without a pulse is planned on its cuts anyway)."""
    bounds = [0] + [c for c in cuts if 0 < c < n] + [n]
    shots = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    scenes: list[list] = []  # [start, end, bpm, confidence, seconds] (the last three of its first readable shot)
    for a, b in shots:
        seconds = (b - a) / rate
        estimate = tempo_mod.estimate_tempo(levelled[a:b], rate, tempo_range) if seconds >= MIN_SCENE else None
        if scenes:
            scene = scenes[-1]
            bpm, confidence = scene[2], scene[3]
            pulse = math.isfinite(bpm) and confidence >= required_confidence(scene[4], method)
            own = estimate is not None and estimate.confidence >= required_confidence(seconds, method)
            if estimate is None or not math.isfinite(bpm):
                join = True
            elif pulse and own:
                join = _same_tempo(estimate.bpm, bpm) or _same_tempo(estimate.bpm, 2 * bpm, 0.03) \
                    or _same_tempo(estimate.bpm, bpm / 2, 0.03)
            elif pulse:  # a weak shot: the scene's pulse goes on through it (a short shot reads too little to say no)
                join = seconds < HOLD or tempo_mod.pulse_strength(levelled[a:b], rate, bpm) >= GOES_ON * confidence
            else:
                join = not own
            if join:
                scene[1] = b
                if not math.isfinite(bpm) and estimate is not None:
                    scene[2], scene[3], scene[4] = estimate.bpm, estimate.confidence, seconds
                continue
        scenes.append([a, b, estimate.bpm if estimate else float("nan"), estimate.confidence if estimate else 0.0,
                       seconds])
    out: list[tuple[int, int]] = []
    for a, b, _, confidence, seconds in scenes:  # a weak scene is planned on its cuts: no tempo to change
        out.extend(change_points(levelled, rate, a, b, tempo_range, cuts, method)
                   if confidence >= required_confidence(seconds, method) else [(a, b)])
    return out


def change_points(levelled: np.ndarray, rate: float, lo: int, hi: int, tempo_range, cuts: list[int] = (),
                  method: str = "flow") -> list[tuple[int, int]]:
    """[lo, hi) split where the tempo changes for good: a tempogram (the comb contrast over tempi, in
    TEMPOGRAM_WINDOW-s windows every TEMPOGRAM_HOP s) whose mean before and after a point differ in shape.

    Comparing whole comb curves, not one estimate per window, keeps a pulse read at half or double in some
    windows (its comb has peaks at both) from looking like a change, and lets a change show even where single
    estimates waver. A split needs the two sides' curves CHANGE_DISTANCE apart (1 − cosine) and their peaks
    CHANGE_RATIO apart in tempo (not an octave)."""
    window, hop = int(TEMPOGRAM_WINDOW * rate), int(TEMPOGRAM_HOP * rate)
    if hi - lo < 2 * window + 4 * hop:
        return [(lo, hi)]
    bpms = np.exp(np.linspace(math.log(tempo_range[0]), math.log(2 * tempo_range[1]), 160))
    centres = np.arange(lo + window // 2, hi - window // 2 + 1, hop)
    gram = np.array([tempo_mod.comb_scores(levelled[c - window // 2:c + window // 2], rate, bpms) for c in centres])
    gram /= np.linalg.norm(gram, axis=1, keepdims=True) + 1e-9
    best, split = 0.0, None
    for s in range(3, len(centres) - 2):  # at least three windows (1.5 s of steps) on each side
        left, right = gram[:s].mean(0), gram[s:].mean(0)
        distance = 1.0 - float(left @ right / (np.linalg.norm(left) * np.linalg.norm(right) + 1e-9))
        ratio = bpms[int(np.argmax(right))] / bpms[int(np.argmax(left))]
        octave = min(abs(math.log2(ratio) - k) for k in (-1, 1))
        if distance > CHANGE_DISTANCE and abs(math.log(ratio)) > math.log(CHANGE_RATIO) and octave > 0.03 \
                and distance > best:
            best, split = distance, s
    if split is None:
        return [(lo, hi)]
    # a window straddling the change reads a mix: the change is between the last window before and the first
    # after, at the middle of the steps between them
    frame = int(np.clip((centres[split - 1] + centres[split]) // 2, lo + window, hi - window))
    near = [c for c in cuts if lo < c < hi and abs(c - frame) <= SNAP * rate]
    frame = min(near, key=lambda c: abs(c - frame)) if near else frame  # a change at a cut is at the cut
    # confirmed by the two sides read whole: each a confident pulse, at tempi that differ (noise at the end of a
    # steady clip can shift a few windows' curves, not a whole side's reading)
    left = tempo_mod.estimate_tempo(levelled[lo:frame], rate, tempo_range)
    right = tempo_mod.estimate_tempo(levelled[frame:hi], rate, tempo_range)
    if (left.confidence < required_confidence((frame - lo) / rate, method)
            or right.confidence < required_confidence((hi - frame) / rate, method) or _same_tempo(left.bpm, right.bpm)
            or any(_same_tempo(left.bpm, k * right.bpm, 0.03) for k in (0.5, 2.0))):
        return [(lo, hi)]
    return (change_points(levelled, rate, lo, frame, tempo_range, cuts, method)
            + change_points(levelled, rate, frame, hi, tempo_range, cuts, method))


# ---------------------------------------------------------------- a scene's own pulse

def read_pulse(scene: Scene, levelled: np.ndarray, envelope: np.ndarray, rate: float, config, gate: float) -> Scene:
    """Tempo, confidence, beats, meter and phase of one scene, as the whole video was read before scenes."""
    lo, hi = scene.start, scene.end
    part = levelled[lo:hi]
    scene.activity = gate
    if config.tempo is not None:
        estimate = tempo_mod.Tempo(config.tempo, 1.0)
    elif scene.seconds(rate) >= MIN_SCENE:
        estimate = tempo_mod.estimate_tempo(part, rate, config.tempo_range)
    else:
        return scene  # too short to read: no tempo, no confidence (planned, or the neighbours' tempo)
    beats = tempo_mod.track_beats(part, rate, estimate.bpm, config.tightness)
    if config.tempo is None:  # a second pass on the fitted grid's tempo: finer than the autocorrelation's lag step
        refined = tempo_mod.grid_bpm(beats, estimate.bpm)
        if abs(refined / estimate.bpm - 1) < 0.04:
            beats = tempo_mod.track_beats(part, rate, refined, config.tightness)
    if config.tempo is not None and len(beats) < 2:  # nothing to lock onto: a plain grid at the hinted tempo
        beats = np.arange(0.0, (hi - lo) / rate, 60.0 / config.tempo)
    beats = beats + lo / rate
    scene.bpm = estimate.bpm if config.tempo is not None else tempo_mod.grid_bpm(beats, estimate.bpm)
    scene.confidence = 1.0 if config.tempo is not None else estimate.confidence * gate
    half = len(part) // 2
    # at the tempo or double it: a pulse faster than the range is folded into it (tempo.estimate_tempo), and
    # the comb at half a fast pulse's tempo counts the pulse itself against it
    scene.steady = 1.0 if config.tempo is not None else max(
        min(tempo_mod.pulse_strength(part[:half], rate, bpm), tempo_mod.pulse_strength(part[half:], rate, bpm))
        for bpm in (estimate.bpm, 2 * estimate.bpm))
    scene.beats = beats
    strengths = tempo_mod.beat_strengths(envelope, rate, beats)
    scene.meter, scene.phase = (config.meter, 0) if config.meter else tempo_mod.estimate_meter(strengths)
    if config.meter and len(strengths) >= config.meter * 2:  # meter given: still find where bars start
        scene.phase = int(np.argmax([strengths[p::config.meter].mean() for p in range(config.meter)]))
    return scene


# ---------------------------------------------------------------- the plan for weak pulses

def hits(envelope: np.ndarray, rate: float, lo: int, hi: int, top: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The strongest motion hits in [lo, hi): (times in seconds, strengths), local maxima ≥ 0.3 s apart."""
    part = envelope[lo:hi]
    if len(part) < 3:
        return np.zeros(0), np.zeros(0)
    peak = np.r_[False, (part[1:-1] > part[:-2]) & (part[1:-1] >= part[2:]), False] & (part >= 0.35 * part.max())
    order = np.argsort(-part[peak])
    frames, kept = np.nonzero(peak)[0][order], []
    for f in frames:
        if all(abs(f - k) >= 0.3 * rate for k in kept):
            kept.append(int(f))
        if len(kept) >= top:
            break
    kept = np.array(sorted(kept), dtype=np.int64)
    return (kept + lo) / rate, part[kept] if len(kept) else np.zeros(0)


def preferred_tempo(pace: float) -> float:
    """A planned grid's tempo for footage whose motion (0..1, segment affect) is `pace`: calm 72, busy 132."""
    return 72.0 + 60.0 * float(np.clip(pace, 0.0, 1.0))


def plan(anchors: list[float], pace: list[float], hit_times: np.ndarray, hit_strengths: np.ndarray, meter: int,
         before: float | None = None) -> list[tuple[int, float]]:
    """Beats per shot for a run of weak shots between `anchors` (seconds: the run's start, its cuts, its end):
    [(beats, tempo)] per shot. Each shot's beats are evenly spaced from its start, so the cut that ends it falls
    on the next shot's first beat (a downbeat). A dynamic programme picks the beat counts: tempo near the
    shot's preferred one, hits on beats, whole bars, and tempo steps between shots within STEP_LIMIT
    (`before`: the tempo the run follows, if any)."""
    lengths = np.diff(anchors)
    options: list[list[tuple[int, float, float]]] = []  # per shot: (beats, tempo, own cost)
    for j, length in enumerate(lengths):
        want = preferred_tempo(pace[j])
        lo_b = max(1, math.ceil(PLAN_RANGE[0] * length / 60 - 1e-9))
        hi_b = max(lo_b, math.floor(PLAN_RANGE[1] * length / 60 + 1e-9))
        if lo_b > hi_b or hi_b < 1:  # too short for the range: the count nearest to it
            lo_b = hi_b = max(1, round(PLAN_RANGE[1] * length / 60))
        shot_hits = (hit_times >= anchors[j]) & (hit_times < anchors[j + 1])
        times, weights = hit_times[shot_hits] - anchors[j], hit_strengths[shot_hits]
        choices = []
        for beats in range(lo_b, hi_b + 1):
            tempo = 60.0 * beats / length
            period = length / beats
            cost = 1.5 * abs(math.log2(tempo / want))
            if len(times):
                distance = np.abs(times / period - np.round(times / period)) * period
                on = (distance <= HIT_WINDOW).astype(np.float64)
                cost += 1.0 * (1.0 - float((on * weights).sum() / weights.sum()))
            cost += 0.15 * (beats % meter != 0)  # a shot of whole bars reads better (a partial bar is allowed)
            choices.append((beats, tempo, cost))
        options.append(choices)
    # dynamic programme over shots: state = the choice in the current shot
    def step_cost(a: float, b: float) -> float:
        jump = abs(math.log(b / a))
        return 0.5 * jump + 8.0 * max(0.0, jump - math.log(STEP_LIMIT))

    best = [c[2] + (step_cost(before, c[1]) if before else 0.0) for c in options[0]]
    back: list[list[int]] = []
    for j in range(1, len(options)):
        row, links = [], []
        for beats, tempo, cost in options[j]:
            totals = [best[k] + step_cost(options[j - 1][k][1], tempo) for k in range(len(options[j - 1]))]
            k = int(np.argmin(totals))
            row.append(totals[k] + cost)
            links.append(k)
        best, back = row, back + [links]
    k = int(np.argmin(best))
    chosen = [k]
    for links in reversed(back):
        k = links[k]
        chosen.append(k)
    chosen.reverse()
    return [(options[j][k][0], options[j][k][1]) for j, k in enumerate(chosen)]


def planned_scenes(run: list[Scene], cuts_in: list[int], rate: float, envelope: np.ndarray, pace, meter: int,
                   before: float | None) -> list[Scene]:
    """The weak scenes `run` (adjacent, in order) replaced by one planned scene per shot between their cuts."""
    lo, hi = run[0].start, run[-1].end
    bounds = [lo] + [c for c in cuts_in if lo < c < hi] + [hi]
    anchors = [b / rate for b in bounds]
    times, strengths = hits(envelope, rate, lo, hi)
    # a hit counts as much as its scene moves at all: a still's codec flicker has peaks, not impacts
    activity = np.array([next(s.activity for s in run if s.start <= t * rate < s.end or s is run[-1]) for t in times])
    keep = activity > 0
    times, strengths = times[keep], strengths[keep] * activity[keep]
    shot_pace = [pace((a + b) / 2) for a, b in zip(anchors[:-1], anchors[1:])]
    confidence = {id(s): s.confidence for s in run}
    out = []
    for (a, b), (beats, tempo) in zip(zip(bounds[:-1], bounds[1:]), plan(anchors, shot_pace, times, strengths, meter,
                                                                         before)):
        start = a / rate
        period = (b - a) / rate / beats
        owner = next(s for s in run if s.start <= a < s.end)
        inside = (times >= start) & (times < b / rate)
        grid = onto_hits(start + period * np.arange(beats), b / rate, times[inside], strengths[inside])
        out.append(Scene(a, b, bpm=tempo, confidence=confidence[id(owner)], beats=grid, meter=meter, phase=0,
                         sync="cuts"))
    return out


def onto_hits(beats: np.ndarray, end: float, hit_times: np.ndarray, hit_strengths: np.ndarray) -> np.ndarray:
    """An even grid (beats from a cut to `end`, the next cut) with the beat nearest each strong hit moved onto it
    when that is within RUBATO of a period; the beats between two fixed points are spaced evenly again. The first
    beat (the cut) never moves, so cuts stay on downbeats; a beat interval changes by at most RUBATO."""
    if len(beats) < 2 or not len(hit_times):
        return beats
    period = float(beats[1] - beats[0])
    fixed = {0: float(beats[0])}
    for k in np.argsort(-hit_strengths):
        if hit_strengths[k] < 0.5 * hit_strengths.max():
            break
        index = int(np.argmin(np.abs(beats - hit_times[k])))
        if index in fixed or abs(beats[index] - hit_times[k]) > RUBATO * period:
            continue
        left = max(i for i in fixed if i < index) if any(i < index for i in fixed) else None
        right = min((i for i in fixed if i > index), default=None)
        # the move must not squeeze any beat interval between fixed points by more than RUBATO
        if left is not None and abs((hit_times[k] - fixed[left]) / (index - left) / period - 1) > RUBATO:
            continue
        right_time = fixed[right] if right is not None else end
        right_index = right if right is not None else len(beats)
        if abs((right_time - hit_times[k]) / (right_index - index) / period - 1) > RUBATO:
            continue
        fixed[index] = float(hit_times[k])
    out = beats.astype(np.float64).copy()
    points = sorted(fixed.items()) + [(len(beats), end)]
    for (i, a), (j, b) in zip(points[:-1], points[1:]):
        out[i:j] = a + (b - a) * np.arange(j - i) / (j - i)
    return out
