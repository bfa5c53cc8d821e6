"""Edited footage with ground truth: scenes of different pace joined by hard cuts, as users bring it.

v2m.samples draws one steady pulse; real videos are edited — a montage of shots each moving at its own tempo,
shots with camera moves and a few impacts but no steady pulse at all, still frames. Each scene here is one
of:

- ``pulse``: a v2m.samples shot (balls landing, flashes, a pan reversing) on its own beat at `bpm`;
- ``edit``: a camera that drifts and eases over a textured scene (smooth, never periodic) with a slow
  distractor, and a few *hits* at random, unevenly spaced times — a flash or a ball striking the floor,
  the impacts an editor would cut music to;
- ``still``: one frame held (a photo), with only pixel noise and the codec's own flicker.

Scenes are joined by hard cuts on frame boundaries. The ground truth lists, per scene, its span and (for a
pulse) its tempo, beats and downbeats; the cut times; and the hits. Frames are drawn and piped to ffmpeg
one at a time (constant memory), like v2m.samples.

    v2m sample montage.mp4 --scenes 84:8,110:8,132:8      # three scenes at three tempi
    v2m sample cuts.mp4 --scenes edit:5,edit:3.5,edit:6    # cuts and hits, no pulse
    v2m sample still.mp4 --scenes still:10
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .errors import V2MError
from .samples import MOTIONS, SampleSpec, _disc, _Shot, encode_frames, ground_truth, render_frames

KINDS = ("pulse", "edit", "still")


@dataclass(frozen=True)
class Scene:
    """One shot: `seconds` long; a `pulse` at `bpm` with `motion` (v2m.samples' kinds), an `edit` with `hits`
    impacts and no pulse, or a `still` frame."""

    seconds: float
    kind: str = "pulse"
    bpm: float | None = None
    motion: str = "mixed"
    hits: int | None = None  # edit scenes: impacts (None: about one per 1.5 s)
    meter: int = 4
    cut: bool = True  # False: the same shot goes on (same scene, palette and layout), only the tempo changes


def parse_scenes(text: str) -> list[Scene]:
    """`BPM[:SECONDS]`, `edit[:SECONDS]` or `still[:SECONDS]`, comma-separated (seconds default 6)."""
    scenes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        head, _, tail = part.partition(":")
        try:
            seconds = float(tail) if tail else 6.0
            if head in ("edit", "still"):
                scenes.append(Scene(seconds, kind=head))
            else:
                scenes.append(Scene(seconds, "pulse", bpm=float(head)))
        except ValueError:
            raise V2MError(f"--scenes: cannot read '{part}'", "write BPM[:SECONDS], edit[:SECONDS] or still[:SECONDS], "
                           "comma-separated, e.g. 84:8,110:8,edit:5") from None
    if not scenes:
        raise V2MError("--scenes: no scene given", "e.g. --scenes 84:8,110:8,132:8")
    for scene in scenes:
        if scene.seconds < 0.5 or (scene.bpm is not None and not 20 <= scene.bpm <= 400):
            raise V2MError(f"--scenes: {scene.seconds:g} s at {scene.bpm} BPM: scenes last ≥ 0.5 s, tempi are 20..400 BPM")
    return scenes


def montage_truth(scenes: list[Scene], fps: float, seed: int) -> dict:
    """Spans, beats, downbeats, cuts and hits (seconds, cut times on frame boundaries) without drawing."""
    rng = np.random.default_rng(seed)
    frame, out = 0, []
    for i, scene in enumerate(scenes):
        frames = max(1, int(round(scene.seconds * fps)))
        start, end = frame / fps, (frame + frames) / fps
        record = {"kind": scene.kind, "start": round(start, 4), "end": round(end, 4), "bpm": None, "beats": [],
                  "downbeats": [], "hits": [], "frames": [frame, frame + frames]}
        if scene.kind == "pulse":
            shot = ground_truth(SampleSpec(bpm=scene.bpm, duration=frames / fps, fps=fps, seed=seed + 7 * i, cuts=0,
                                           meter=scene.meter))
            record.update(bpm=scene.bpm, beats=[round(start + b, 4) for b in shot["beats"]],
                          downbeats=[round(start + b, 4) for b in shot["downbeats"]])
        elif scene.kind == "edit":
            record["hits"] = [round(start + t, 4) for t in _hit_times(rng, frames / fps, scene.hits)]
        out.append(record)
        frame += frames
    cuts = [record["start"] for record, scene in zip(out[1:], scenes[1:]) if scene.cut]
    return {"scenes": out, "cuts": cuts, "duration": frame / fps, "frames": frame,
            "beats": [b for s in out for b in s["beats"]], "hits": [h for s in out for h in s["hits"]],
            "spec": {"scenes": [asdict(s) for s in scenes], "fps": fps, "seed": seed}}


def _hit_times(rng: np.random.Generator, seconds: float, count: int | None) -> list[float]:
    """Impact times ≥ 0.6 s apart and ≥ 0.3 s from the scene's edges, unevenly spaced (no pulse to find)."""
    n = count if count is not None else max(1, int(seconds / 1.5))
    times: list[float] = []
    for _ in range(200 * n):
        if len(times) >= n:
            break
        t = float(rng.uniform(0.3, max(0.31, seconds - 0.3)))
        if all(abs(t - other) >= 0.6 for other in times):
            times.append(t)
    return sorted(times)


def _edit_frames(scene_truth: dict, spec: SampleSpec, rng: np.random.Generator):
    """An edit scene: a drifting, easing camera over a textured canvas, a distractor, and its hits."""
    h, w = spec.height, spec.width
    margin = int(0.25 * w)
    shot = _Shot(rng, spec, float(rng.uniform(0, 1)), margin)
    start, (first, last) = scene_truth["start"], scene_truth["frames"]
    hits = [t - start for t in scene_truth["hits"]]
    # two incommensurate slow sines: the camera moves all the time and never repeats at a tempo
    f1, f2 = rng.uniform(0.07, 0.16), rng.uniform(0.19, 0.31)
    p1, p2 = rng.uniform(0, 2 * math.pi, size=2)
    ball_x, radius = rng.uniform(0.3, 0.7) * w, 0.09 * h
    for i in range(last - first):
        t = i / spec.fps
        pan = 0.5 + 0.3 * math.sin(2 * math.pi * f1 * t + p1) + 0.2 * math.sin(2 * math.pi * f2 * t + p2)
        offset = int(round(np.clip(pan, 0, 1) * 2 * margin))
        frame = shot.canvas[:, offset:offset + w].copy()
        dx = (shot.drift_speed * t) % (w + 0.1 * h) - 0.05 * h
        frame[int(shot.drift_y):int(shot.drift_y + 0.1 * h), max(0, int(dx)):max(0, int(dx + 0.1 * h))] = 200
        since = [t - hit for hit in hits if hit <= t]
        if since and since[-1] < 0.6:  # the latest hit: a flash that decays, and a ball that struck the floor
            level = math.exp(-since[-1] / 0.12)
            x0, y0 = shot.flash_xy
            patch = frame[int(y0):int(y0 + 0.3 * h), int(x0):int(x0 + 0.3 * h)].astype(np.float32)
            patch += level * (shot.flash_rgb - patch)
            frame[int(y0):int(y0 + 0.3 * h), int(x0):int(x0 + 0.3 * h)] = patch.astype(np.uint8)
        upcoming = [hit - t for hit in hits if hit > t]
        rest = 0.5 * h
        if upcoming and upcoming[0] < 0.45:  # falling, faster and faster, onto the floor at the hit
            height = rest * (upcoming[0] / 0.45) ** 2
        elif since:  # on the floor, then eased back up over a second (slow: no onset of its own)
            rise = float(np.clip((since[-1] - 0.3) / 1.0, 0.0, 1.0))
            height = rest * rise * rise * (3 - 2 * rise)
        else:
            height = rest
        _disc(frame, ball_x, 0.9 * h - radius - height, radius, shot.object_rgb)
        yield frame


def render_montage(scenes: list[Scene], truth: dict, spec: SampleSpec):
    """Yield every frame (H, W, 3 uint8) of the montage, scene after scene."""
    rng = np.random.default_rng(spec.seed + 1)
    noise = np.clip(rng.normal(0, spec.noise, size=(6, spec.height, spec.width, 3)), -127, 127).astype(np.int8) \
        if spec.noise > 0 else None
    shot = 0
    for i, (scene, record) in enumerate(zip(scenes, truth["scenes"])):
        first, last = record["frames"]
        shot = i if scene.cut or i == 0 else shot  # without a cut, the shot's own seed: the same picture goes on
        if scene.kind == "pulse":
            shot_spec = replace(spec, bpm=scene.bpm, duration=(last - first) / spec.fps, seed=spec.seed + 7 * shot,
                                cuts=0, meter=scene.meter, motion=scene.motion, noise=0.0)
            frames = render_frames(shot_spec, ground_truth(shot_spec))
        elif scene.kind == "edit":
            frames = _edit_frames(record, spec, rng)
        else:
            still = _Shot(rng, spec, float(rng.uniform(0, 1)), 0).canvas[:, :spec.width]
            frames = (still.copy() for _ in range(last - first))
        for frame in frames:
            if noise is not None:
                frame = np.clip(frame.astype(np.int16) + noise[rng.integers(len(noise))], 0, 255).astype(np.uint8)
            yield frame


def write_montage(path: str | Path, scenes: list[Scene], spec: SampleSpec = SampleSpec()) -> dict:
    """Draw and encode the montage to `path` (atomically, no audio); returns the ground truth. `spec` gives the
    frame size, rate, noise, seed and encoder settings (its tempo and duration are the scenes')."""
    for scene in scenes:
        if scene.kind not in KINDS or (scene.kind == "pulse" and (scene.bpm is None or scene.motion not in MOTIONS)):
            raise V2MError(f"scene {scene}: unknown kind or motion", f"kinds: {', '.join(KINDS)}; motions: {', '.join(MOTIONS)}")
    truth = montage_truth(scenes, spec.fps, spec.seed)
    encode_frames(path, render_montage(scenes, truth, spec), spec, [], "the montage")
    return truth
