"""Following the structure plan in the diffusion backend: the roll-domain counterpart of the transformer's
Conductor (stages/generate/motifs.py), so the plan's restatements (stages/tokens/structure.py) are heard.

A bar the plan marks `restate` (its `source` an earlier bar of the same length) is written from its source's roll,
by inpainting:

- `exact`: the whole bar — melody, bass and accompaniment — equals the source bar;
- `transpose`: the source bar moved `steps` scale steps (a diatonic sequence of the whole texture, in the scale the
  sampler writes in: `SCALES` of stages/generate/diffusion.py; a pitch outside it moves with the scale note below
  it); where the move would leave the roll's pitch range, the other way (the Conductor's rule: the contour kept);
- `vary`: the rhythm kept, the second half's melody pitches new — bass, accompaniment and the melody's first half
  equal the source's, the melody's notes in the second half start where the source's do and last as long, their
  pitches drawn by the model (at each step the likeliest allowed pitch of its own estimate: the Conductor draws
  only pitch tokens there).

How the copy enters the sampler (models/diffusion.py `ddim_sample`'s `project`): at every DDIM step the clean
estimate of the restated bar is replaced by the copy of its source's current estimate (the replacement method of
inpainting, Song et al. 2021, with the "known" part read from the same trajectory), so both bars are denoised
together and the model writes the bars around them with the repeat in view. A source in an earlier window is
already written: an exact or transposed copy of it is also given to the model as known context (`known`, mask 1),
as the overlap bars are. The final roll holds the copy exactly: the last DDIM step returns the projected estimate.

Bars are restated in plan order, so a restatement of a restatement (bar 8 ← bar 4 ← bar 0) reads its source after
that source was itself projected.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from v2m.models.diffusion import N_PITCH, PITCH_LOW, PLANES, ROLES


@dataclass(frozen=True)
class Restatement:
    """Bar `target` (its first step in the piece) restates the bar at step `source`, `length` steps long."""

    target: int
    source: int
    length: int
    kind: str   # exact | transpose | vary
    steps: int  # scale steps (transpose)


@dataclass(frozen=True)
class Ending:
    """A bar that ends a phrase or the piece (its first step `start`, `length` steps, `beats`): `breath` — no melody
    in its last beat; `cadence` — the melody's second-half onsets on the tonic triad; `final` — the tonic chord held."""

    start: int
    length: int
    beats: int
    breath: bool
    cadence: bool
    final: bool

    def breath_steps(self) -> int:
        """Steps of the breath at the bar's end: its last beat (the last half beat of a bar of ≤ 2 beats)."""
        return self.length // self.beats if self.beats > 2 else self.length // (2 * self.beats)


def endings(structure: dict | None, bar_step: np.ndarray, beats: np.ndarray, steps_per_beat: int) -> list[Ending]:
    """The plan's breath, cadence and final bars on the roll's grid (a restated bar's cadence is its source's)."""
    out = []
    for i, row in enumerate((structure or {}).get("bars") or []):
        if i < len(bar_step) and (row.get("breath") or row.get("cadence") or row.get("role") == "final"):
            out.append(Ending(int(bar_step[i]), int(beats[i]) * steps_per_beat, int(beats[i]), bool(row.get("breath")),
                              bool(row.get("cadence")) and row.get("role") not in ("restate", "final"),
                              row.get("role") == "final"))
    return out


def restatements(structure: dict | None, bar_step: np.ndarray, beats: np.ndarray, steps_per_beat: int
                 ) -> list[Restatement]:
    """The plan's restated bars on the roll's grid (an empty list without a plan)."""
    out = []
    for i, row in enumerate((structure or {}).get("bars") or []):
        if row.get("role") != "restate" or i >= len(bar_step):
            continue
        source = int(row["source"])
        if not 0 <= source < i or beats[source] != beats[i]:
            continue  # check_structure refuses these; a plan made here never has them
        out.append(Restatement(int(bar_step[i]), int(bar_step[source]), int(beats[i]) * steps_per_beat,
                               str(row.get("kind", "exact")), int(row.get("steps", 0))))
    return out


@functools.lru_cache(maxsize=64)
def transposition(scale: tuple[int, ...], steps: int) -> np.ndarray:
    """Pitch index map int [N_PITCH] (read-only; cached: every window of a piece asks again): where each roll pitch
    goes moved `steps` degrees of `scale` (pitch classes of the roll's key); -1 where it would leave the roll's
    range."""
    pcs = sorted(set(int(p) % 12 for p in scale))
    degrees = [o * 12 + pc for o in range(-1, 12) for pc in pcs]  # every scale pitch, ascending
    out = np.full(N_PITCH, -1, np.int64)
    for index in range(N_PITCH):
        pitch = PITCH_LOW + index
        below = max(k for k, d in enumerate(degrees) if d <= pitch)
        target = degrees[below + steps] + (pitch - degrees[below]) if 0 <= below + steps < len(degrees) else -1
        if 0 <= target - PITCH_LOW < N_PITCH:
            out[index] = target - PITCH_LOW
    out.flags.writeable = False
    return out


def _moved(block: torch.Tensor, index: np.ndarray) -> torch.Tensor:
    """block [B, L, roles, planes, N_PITCH] with every pitch moved by `index` (transposition); dropped where -1."""
    out = torch.full_like(block, -1.0)
    keep = np.flatnonzero(index >= 0)
    out[..., torch.as_tensor(index[keep], device=block.device)] = block[..., torch.as_tensor(keep, device=block.device)]
    return out


def _fits(block: torch.Tensor, index: np.ndarray) -> bool:
    """Whether every note of `block` stays inside the roll's range when moved by `index`."""
    used = (block > 0).flatten(0, -2).any(0).cpu().numpy()
    return not bool((used & (index < 0)).any())


class RestatedBars:
    """The `project` of one window for ddim_sample: restated bars forced to their sources' (see the docstring).
    `start`: the window's first step in the piece; `first_free`: its first step after the known context;
    `written` [B, steps, CHANNELS]: the piece so far (sources before the window); `scale`: the key's pitch classes;
    `allowed_pitches` bool [N_PITCH] (None: all)."""

    def __init__(self, bars: list[Restatement], start: int, first_free: int, end: int, written: torch.Tensor,
                 scale: tuple[int, ...], allowed_pitches: torch.Tensor | None, ends: list[Ending] = (),
                 triad: tuple[int, ...] = (0, 4, 7)):
        self.bars = [r for r in bars if start + first_free <= r.target and r.target + r.length <= end]
        self.ends = [e for e in ends if start + first_free <= e.start and e.start + e.length <= end]
        self.triad, self.tonic = triad, triad[0]
        self._off_triad = torch.as_tensor([(PITCH_LOW + p) % 12 not in triad for p in range(N_PITCH)])
        self.first_free = first_free
        self.start, self.written = start, written
        self.maps = {s: transposition(scale, s) for s in {r.steps for r in self.bars if r.kind == "transpose"}}
        self.maps.update({-s: transposition(scale, -s) for s in list(self.maps)})
        self.allowed = allowed_pitches
        self.x_known: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    def __bool__(self) -> bool:
        return bool(self.bars or self.ends)

    def known(self, x_known: torch.Tensor, mask: torch.Tensor) -> None:
        """Exact and transposed copies of bars already written, put into the window's known context (in place;
        the sources in the known context are read from it from now on)."""
        self.x_known, self.mask = x_known, mask
        for r in self.bars:
            if r.source + r.length <= self.start and r.kind != "vary":
                source = self._view(self.written[:, r.source:r.source + r.length].to(x_known.device, x_known.dtype))
                at = r.target - self.start
                x_known[:, at:at + r.length] = self._copy(r, source, None).flatten(2)
                mask[:, at:at + r.length] = 1.0

    def __call__(self, x0: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """The clean estimate [B, W, CHANNELS] with the plan's bars projected, in bar order: a restated bar replaced
        by its source's copy (a source after its own projection), then the phrase endings."""
        ref = x0.clone() if self.mask is None else torch.where(self.mask.to(x0.device)[..., None] > 0,
                                                                self.x_known.to(x0.device, x0.dtype), x0)
        events = sorted([(r.target, 0, r) for r in self.bars] + [(e.start, 1, e) for e in self.ends],
                        key=lambda event: event[:2])
        for _, _, event in events:
            if isinstance(event, Restatement):
                r = event
                if r.source >= self.start:
                    source = ref[:, r.source - self.start:r.source - self.start + r.length]
                else:
                    source = self.written[:, r.source:r.source + r.length].to(x0.device, x0.dtype)
                at = r.target - self.start
                ref[:, at:at + r.length] = self._copy(r, self._view(source),
                                                      self._view(raw[:, at:at + r.length])).flatten(2)
                continue
            e = event
            at = e.start - self.start
            bar = self._view(ref[:, at:at + e.length])  # a view: written in place
            if e.final:
                bar.copy_(self._final_chord(self._view(ref), at, e.length))
                continue
            if e.cadence:  # the melody's onsets in the second half only on the tonic triad
                bar[:, e.length // 2:, 0, 0, self._off_triad.to(x0.device)] = -1.0
            if e.breath:  # the melody rests in the last beat (the last half beat of a bar of ≤ 2 beats)
                bar[:, e.length - e.breath_steps():, 0] = -1.0
        out = x0.clone()  # the known context keeps the model's own estimate (its values are restored at the end)
        out[:, self.first_free:] = ref[:, self.first_free:]
        return out

    def _final_chord(self, ref: torch.Tensor, at: int, length: int) -> torch.Tensor:
        """The last bar: the tonic in the melody and the bass, the tonic triad in the accompaniment, each held from
        the downbeat to the end, near where that part has been in this window (its median onset pitch)."""
        out = torch.full_like(ref[:, at:at + length], -1.0)
        before = (ref[:, :at, :, 0] > 0).cpu().numpy()  # [B, steps, roles, N_PITCH] onsets before the bar
        for b in range(out.shape[0]):
            for role, classes, default in ((0, (self.tonic,), 72), (1, (self.tonic,), 45), (2, self.triad, 60)):
                played = np.flatnonzero(before[b, :, role].any(0))
                centre = PITCH_LOW + int(np.median(played)) if len(played) else default
                for pc in classes:
                    pitch = min((p for p in range(PITCH_LOW, PITCH_LOW + N_PITCH) if p % 12 == pc),
                                key=lambda p: abs(p - centre))
                    out[b, 0, role, 0, pitch - PITCH_LOW] = 1.0
                    out[b, :, role, 1, pitch - PITCH_LOW] = 1.0
        return out

    @staticmethod
    def _view(block: torch.Tensor) -> torch.Tensor:
        return block.reshape(*block.shape[:2], len(ROLES), PLANES, N_PITCH)

    def _copy(self, r: Restatement, source: torch.Tensor, estimate: torch.Tensor | None) -> torch.Tensor:
        """The restated bar [B, L, roles, planes, N_PITCH] from its source's; `estimate`: the bar's own (raw)
        clean estimate, whose likeliest pitches `vary` takes (None: a fixed source, vary not given as known)."""
        if r.kind == "transpose" and r.steps:
            index = self.maps[r.steps]
            if not _fits(source, index):
                index = self.maps[-r.steps]
            return _moved(source, index)
        if r.kind == "vary" and estimate is not None:
            return self._varied(source, estimate)
        return source

    def _varied(self, source: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        """Bass, accompaniment and the melody's first half as the source's; the melody's notes of the second half
        on the source's onsets and durations at the pitch the bar's own estimate likes best (allowed pitches)."""
        out = source.clone()
        length = source.shape[1]
        half = length // 2
        melody = source[:, :, 0].cpu().numpy() > 0                  # [B, L, planes, N_PITCH]
        onset_score = estimate[:, :, 0, 0].float().cpu().numpy()      # [B, L, N_PITCH]
        if self.allowed is not None:
            onset_score = np.where(self.allowed.cpu().numpy()[None, None], onset_score, -np.inf)
        new = -np.ones_like(melody[:, half:], dtype=np.float32)
        for b in range(melody.shape[0]):
            onsets = [(s, int(np.flatnonzero(melody[b, s, 0])[-1])) for s in range(length) if melody[b, s, 0].any()]
            for k, (s, p) in enumerate(onsets):
                stop = onsets[k + 1][0] if k + 1 < len(onsets) else length
                end = s + 1
                while end < stop and melody[b, end, 1, p]:
                    end += 1
                if s < half:  # a first-half note held over the middle keeps sounding
                    new[b, :max(0, end - half), 1, p] = 1.0
                    continue
                q = int(np.argmax(onset_score[b, s]))
                new[b, s - half, 0, q] = 1.0
                new[b, s - half:end - half, 1, q] = 1.0
        out[:, half:, 0] = torch.as_tensor(new, device=out.device, dtype=out.dtype)
        return out
