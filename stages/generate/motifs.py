"""Following the structure plan while sampling: motifs restated, phrases that breathe, cadences, the final chord.

The sampler (generate/sampler.py) asks a `Conductor` what opens each bar and which tokens may be drawn next, and
tells it every token it emits. The conductor keeps, per sample, the notes each bar received (its REMI
`Position`/`Pitch`/`Duration` tokens), the running key, and where in the bar the line is:

- a **restated** bar (the plan's `restate`: stages/tokens/structure.py) is forced whole from its source bar's
  notes: `exact`; `transpose` by scale steps in the key found so far (a diatonic sequence: chromatic notes move
  with their neighbour; the other way when the plan's direction would leave the register); `vary` keeps the rhythm and the first half's pitches and samples the second half's
  pitches anew (only pitch tokens may be drawn there);
- a **breath** bar (the last of a phrase before the next) may not start or hold a note in its last beat, so a
  rest falls before the phrase or cut that follows; a restated breath bar is trimmed the same way;
- a **cadence** bar's notes in its second half are drawn from the tonic triad of the running key;
- the **final** bar is the tonic, held from its downbeat to the end of the piece.

The key is Krumhansl–Schmuckler's: the pitch-class counts of the notes so far correlated with the
Krumhansl–Kessler profile of the controls' mode; until a few notes exist, nothing is constrained by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from v2m.stages.generate.plan import STEPS_PER_BEAT, NoteTokens
from v2m.stages.tokens.structure import bar_beats

PITCH = -1            # a queue entry: draw a pitch here (only pitch tokens allowed)
MIN_KEY_NOTES = 6     # fewer notes than this: no key yet, so no cadence or diatonic constraint
SHORTEST = 3          # steps: a note before a breath starts early enough to last a sixteenth
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
TRIADS = {"major": (0, 4, 7), "minor": (0, 3, 7)}
PROFILES = {  # Krumhansl & Kessler (1982) key profiles, tonic first
    "major": (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
    "minor": (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
}


def _rolled(profile) -> np.ndarray:
    """The profile for each of the 12 tonics (row t = the profile rolled by t), centred and of unit norm."""
    rows = np.stack([np.roll(np.asarray(profile, dtype=float), tonic) for tonic in range(12)])
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


ROLLED = {mode: _rolled(profile) for mode, profile in PROFILES.items()}


def key_of(pitch_counts: np.ndarray, mode: str) -> int | None:
    """The tonic pitch class whose `mode` profile best correlates (Pearson) with the counts (None: too few notes).
    One product with the 12 rolled, normalised profiles (the sampler asks after every new pitch)."""
    if pitch_counts.sum() < MIN_KEY_NOTES or np.ptp(pitch_counts) == 0:  # too few notes, or all twelve alike
        return None
    centred = pitch_counts - pitch_counts.mean()
    # rounded: two tonics that tie exactly (a symmetric set of counts) go to the lower one, not to float rounding
    return int(np.argmax(np.round(ROLLED[mode] @ (centred / np.linalg.norm(centred)), 12)))


def transpose_diatonic(pitch: int, steps: int, tonic: int, mode: str) -> int:
    """`pitch` moved `steps` degrees along the scale of `tonic`/`mode`; a note outside the scale moves as the
    scale note below it does."""
    scale = SCALES[mode]
    rel = (pitch - tonic) % 12
    below = max(d for d in range(7) if scale[d] <= rel)
    octave, degree = divmod(below + steps, 7)
    target = scale[degree] + 12 * octave
    return pitch + target - scale[below]


@dataclass
class Voice:
    """One sample's state: the bar it is in, where in that bar, the notes each bar got, its pitch classes."""

    bar: int = -1
    position: int = 0           # steps (1/12 beat) since the bar's downbeat, of the last Position token
    after_pitch: bool = False   # the last token was a Pitch: a Duration comes next
    content: dict = field(default_factory=dict)   # bar → its note tokens
    counts: np.ndarray = field(default_factory=lambda: np.zeros(12))
    key: int | None = None      # key_of(counts), kept until the next pitch
    key_stale: bool = False


class Conductor:
    """What opens each bar and what may be drawn next, for `n` samples following `structure`."""

    def __init__(self, structure: dict | None, plan, vocab, controls: dict, n: int, banned: torch.Tensor):
        self.rows = (structure or {}).get("bars") or [{} for _ in plan.bars]
        # masks are built on the host from `banned` and kept on its device: the same tensor for the same constraint,
        # so a CUDA graph copies a mask in only when it changes
        self.plan, self.vocab, self.banned, self.on_device = plan, vocab, banned.bool().cpu(), banned.bool()
        self.mode = "minor" if controls.get("mode") == "minor" else "major"
        self.beats = bar_beats(controls)
        self.voices = [Voice() for _ in range(n)]
        self.notes = NoteTokens(vocab)
        self.kind, self.pitch_id, self.position_id = self.notes.kind, self.notes.pitch_id, self.notes.position_id
        self._masks: dict = {}
        self._stacks: dict = {}

    # ------------------------------------------------------------ bars

    def opening(self, b: int, i: int) -> tuple[list[int], bool]:
        """The tokens that open bar `i` for sample `b`, and whether they are the whole bar."""
        voice = self.voices[b]
        voice.bar, voice.position, voice.after_pitch = i, 0, False
        voice.content[i] = []
        forced = list(self.plan.bars[i])
        if self.plan.theme_from <= i < self.plan.theme_bars:
            return forced, True
        row = self.rows[i] if i < len(self.rows) else {}
        if row.get("role") == "final":
            chord = self._final_chord(voice, i)
            if chord:
                return forced + chord, True
        if row.get("role") == "restate":
            notes = self._restated(voice, row, i)
            if notes:
                return forced + notes, True
        return forced, False

    def observe(self, b: int, token: int) -> None:
        """Sample `b` emitted `token` (forced or drawn)."""
        voice = self.voices[b]
        kind = self.kind.get(token)
        if kind is None or voice.bar < 0:
            return
        voice.content.setdefault(voice.bar, []).append(token)
        if kind[0] == "pos":
            voice.position, voice.after_pitch = kind[1], False
        elif kind[0] == "pitch":
            voice.counts[kind[1] % 12] += 1
            voice.after_pitch, voice.key_stale = True, True
        else:
            voice.after_pitch = False

    def _tonic(self, voice: Voice) -> int | None:
        """The voice's running key, estimated again only after a new pitch (cadence bars ask at every token)."""
        if voice.key_stale:
            voice.key, voice.key_stale = key_of(voice.counts, self.mode), False
        return voice.key

    # ------------------------------------------------------------ masks

    def mask(self, queues: list[list[int]], finished: list[bool]) -> torch.Tensor:
        """The banned mask for the next draw: [V] when every sample draws under the base mask, else [B, V]."""
        keys = tuple(self._key(b, queue) if not done else None for b, (queue, done) in enumerate(zip(queues, finished)))
        if all(key is None for key in keys):
            return self.on_device
        if keys not in self._stacks:
            if len(self._stacks) > 256:
                self._stacks.clear()
            self._stacks[keys] = torch.stack([self._mask(key) for key in keys]).to(self.on_device.device)
        return self._stacks[keys]

    def _key(self, b: int, queue: list[int]):
        """What constrains sample b's next draw (None: only the base mask)."""
        if queue:
            return ("pitch",) if queue[0] == PITCH else None
        voice = self.voices[b]
        row = self.rows[voice.bar] if 0 <= voice.bar < len(self.rows) else {}
        if not row.get("cadence") or voice.after_pitch or voice.position < self.beats[voice.bar] * STEPS_PER_BEAT // 2:
            return None
        tonic = self._tonic(voice)
        return None if tonic is None else ("triad", tonic)

    def _mask(self, key) -> torch.Tensor:
        if key is None:
            return self.banned
        if key not in self._masks:
            mask = self.banned.clone()
            if key[0] == "pitch":
                mask |= ~self._of("pitch")
            else:
                triad = {(key[1] + d) % 12 for d in TRIADS[self.mode]}
                for pitch, token in self.pitch_id.items():
                    mask[token] |= pitch % 12 not in triad
                if bool(mask[list(self.pitch_id.values())].all()):  # nothing left in the register: no constraint
                    mask = self.banned.clone()
            self._masks[key] = mask
        return self._masks[key]

    def substitute(self, b: int, token: int) -> int:
        """A freely drawn token as the plan lets it stand. In a breath bar a note that would start in the breath
        closes the bar instead (`Bar`), and one that would sound into it is shortened to end where it begins.
        (Substituted, not masked: masking leaves the model only notes it did not want there, and it stutters.)"""
        voice = self.voices[b]
        row = self.rows[voice.bar] if 0 <= voice.bar < len(self.rows) else {}
        kind = self.kind.get(token)
        if not row.get("breath") or kind is None:
            return token
        limit = self._breath_limit(voice.bar)
        if kind[0] == "pos" and kind[1] > limit - SHORTEST:
            return self.vocab.bar_id
        if kind[0] == "dur" and voice.position + kind[1] > limit:
            return self.notes.duration_token(max(limit - voice.position, SHORTEST))
        return token

    def _of(self, kind: str) -> torch.Tensor:
        out = torch.zeros_like(self.banned)
        out[[t for t, (k, _) in self.kind.items() if k == kind]] = True
        return out

    def _breath_limit(self, i: int) -> int:
        """Steps into bar i after which nothing may sound: its last beat (half a beat in a bar of ≤ 2 beats)."""
        beats = self.beats[i]
        return (beats - (1 if beats > 2 else 0.5)) * STEPS_PER_BEAT

    # ------------------------------------------------------------ restatements

    def _restated(self, voice: Voice, row: dict, i: int) -> list[int]:
        notes = list(voice.content.get(int(row["source"]), []))
        if not any(self.kind[t][0] == "pitch" for t in notes):
            return []  # the source bar is silent: this bar is sampled instead
        kind, steps = row.get("kind", "exact"), int(row.get("steps", 0))
        tonic = self._tonic(voice)
        if kind == "transpose" and steps and tonic is not None and not self._fits(notes, steps, tonic):
            steps = -steps  # a sequence that would leave the register goes the other way (keeping its contour)
        half = self.beats[i] * STEPS_PER_BEAT // 2
        out, position = [], 0
        for token in notes:
            what, value = self.kind[token]
            if what == "pos":
                position = value
            elif what == "pitch" and kind == "transpose" and steps and tonic is not None:
                token = self._pitch_token(transpose_diatonic(value, steps, tonic, self.mode), value)
            elif what == "pitch" and kind == "vary" and position >= half:
                token = PITCH
            out.append(token)
        if self.rows[i].get("breath"):
            out = self._trimmed(out, self._breath_limit(i))
        return out

    def _fits(self, notes: list[int], steps: int, tonic: int) -> bool:
        """Whether every pitch of `notes` moved `steps` scale steps stays inside the allowed pitches."""
        for token in notes:
            what, value = self.kind[token]
            if what == "pitch":
                moved = self.pitch_id.get(transpose_diatonic(value, steps, tonic, self.mode))
                if moved is None or bool(self.banned[moved]):
                    return False
        return True

    def _pitch_token(self, pitch: int, fallback: int) -> int:
        """The token of `pitch`, moved by octaves into the allowed register (else the original pitch's)."""
        for candidate in (pitch, pitch - 12, pitch + 12, pitch - 24, pitch + 24):
            token = self.pitch_id.get(candidate)
            if token is not None and not bool(self.banned[token]):
                return token
        return self.pitch_id[fallback]

    def _trimmed(self, tokens: list[int], limit: int) -> list[int]:
        """Notes starting at or after `limit` dropped, the others shortened to end by it."""
        out, position, keep = [], 0, True
        for token in tokens:
            what, value = self.kind.get(token, ("pitch", 0))  # PITCH (to be drawn) is a pitch too
            if what == "pos":
                position, keep = value, value < limit
                if keep:
                    out.append(token)
            elif what == "dur":
                if keep:
                    out.append(self.notes.duration_token(min(value, limit - position)))
            elif keep:
                out.append(token)
        return out

    def _final_chord(self, voice: Voice, i: int) -> list[int]:
        """The tonic from the downbeat to the end of the last bar, near where the line has been."""
        tonic = self._tonic(voice)
        pitches = [self.kind[t][1] for bar in voice.content.values() for t in bar if self.kind[t][0] == "pitch"]
        if tonic is None or not pitches:
            return []
        centre = int(np.median(pitches[-8:]))
        pitch = min((p for p in self.pitch_id if p % 12 == tonic and not bool(self.banned[self.pitch_id[p]])),
                    key=lambda p: abs(p - centre), default=None)
        if pitch is None:
            return []
        return [self.position_id[0], self.pitch_id[pitch], self.notes.duration_token(self.beats[i] * STEPS_PER_BEAT)]


class Conductors:
    """The conductors of several pieces decoded as one batch (`run` batches videos on a GPU): row r belongs to
    one piece's conductor (its local row), rows past the last piece are padding (always finished)."""

    def __init__(self, conductors: list[Conductor], rows: int):
        self.parts = conductors
        self.where: list[tuple[Conductor, int] | None] = [(c, i) for c in conductors for i in range(len(c.voices))]
        self.spans, at = [], 0
        for c in conductors:
            self.spans.append((c, at, at + len(c.voices)))
            at += len(c.voices)
        self.where += [None] * (rows - at)
        self.rows = rows
        self._stacks: dict = {}

    def opening(self, b: int, i: int) -> tuple[list[int], bool]:
        c, j = self.where[b]
        return c.opening(j, i)

    def observe(self, b: int, token: int) -> None:
        if self.where[b] is not None:
            c, j = self.where[b]
            c.observe(j, token)

    def substitute(self, b: int, token: int) -> int:
        c, j = self.where[b]
        return c.substitute(j, token)

    def mask(self, queues: list[list[int]], finished: list[bool]) -> torch.Tensor:
        """One conductor: its own mask ([V] or [B, V]). Several: [rows, V], each piece's rows under its own masks
        (their registers differ), padding rows under the first piece's base mask; one tensor per combination."""
        if len(self.parts) == 1 and self.rows == len(self.parts[0].voices):
            return self.parts[0].mask(queues, finished)
        masks = tuple(c.mask(queues[a:z], finished[a:z]) for c, a, z in self.spans)
        key = tuple(id(m) for m in masks)  # each conductor hands out one tensor per constraint: identity is content
        if key not in self._stacks:
            if len(self._stacks) > 256:
                self._stacks.clear()
            rows = [m.expand(z - a, -1) if m.dim() == 1 else m for m, (_, a, z) in zip(masks, self.spans)]
            padding = self.rows - self.spans[-1][2]
            if padding:
                rows.append(self.parts[0].on_device.expand(padding, -1))
            self._stacks[key] = (torch.cat(rows), masks)  # the masks kept alive with it: their ids stay theirs
        return self._stacks[key][0]
