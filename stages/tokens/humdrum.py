"""A fast reader for plain Humdrum **kern files (one voice per spine, no spine splits) → symusic.Score.

music21 parses a kern motet in ~0.7 s; most of the bundled corpus (1,318 Palestrina movements) is plain
kern, so this reader (~100× faster) keeps the corpus build within its time budget. Anything it does not
handle (spine split/merge/exchange, rational durations it cannot place) raises `Unsupported`, and the
corpus builder falls back to music21 for that file. tests/stages/tokens/test_corpus.py checks it against
music21 note for note.

Kern pitch: `c` = C4 (MIDI 60), each repeat of a lower-case letter one octave up, `C` = C3, each repeat
of an upper-case letter one octave down; `#`/`-` sharps/flats. Duration: the reciprocal of a whole note
(`4` = quarter, `0` = breve, `00` = long), dots add halves.
"""

from __future__ import annotations

import re
from fractions import Fraction

TPQ = 480
STEP = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
TOKEN = re.compile(r"^(?P<pre>[^0-9a-gA-Gr]*)(?P<recip>\d+)(?:%(?P<den>\d+))?(?P<dots>\.*)")


class Unsupported(ValueError):
    """The file uses kern features this reader does not handle (use music21)."""


def _duration(recip: str, den: str | None, dots: str) -> Fraction:
    """Duration in quarter notes."""
    if recip == "0":
        base = Fraction(8)
    elif recip == "00":
        base = Fraction(16)
    elif recip == "000":
        base = Fraction(32)
    else:
        number = int(recip)
        if number == 0:
            raise Unsupported(f"duration {recip}")
        base = Fraction(4 * (int(den) if den else 1), number)
    return base * (2 - Fraction(1, 2 ** len(dots)))


def _pitch(text: str) -> int | None:
    match = re.search(r"([a-gA-G])\1*", text)
    if not match:
        return None
    letters = match.group(0)
    step = STEP[letters[0].lower()]
    octave = 4 + (len(letters) - 1) if letters[0].islower() else 3 - (len(letters) - 1)
    rest = text[match.end():]
    alter = rest.count("#") - len(re.match(r"-*", rest).group(0))
    return 12 * (octave + 1) + step + alter


def read_kern(text: str):
    """Kern text → symusic.Score (tpq 480, one track per **kern spine). Raises Unsupported."""
    import numpy as np
    import symusic

    spines: list[bool] = []  # True for **kern spines
    cursor: list[Fraction] = []
    notes: list[list[list]] = []  # per spine: [onset, duration, pitch]
    open_ties: list[dict[int, int]] = []
    time_signatures: list[tuple[Fraction, int, int]] = []
    tempo = 120.0
    for line in text.splitlines():
        if not line or line.startswith("!"):
            continue
        fields = line.split("\t")
        if line.startswith("**"):
            spines = [f == "**kern" for f in fields]
            cursor = [Fraction(0)] * len(fields)
            notes = [[] for _ in fields]
            open_ties = [{} for _ in fields]
            continue
        if not spines:
            continue
        if len(fields) != len(spines):
            raise Unsupported("spine count changes")
        if line.startswith("*"):
            for i, f in enumerate(fields):
                if f in ("*^", "*v", "*x", "*+") or (f.startswith("**") and f != "**kern"):
                    raise Unsupported(f"spine manipulator {f}")
                if spines[i] and (m := re.fullmatch(r"\*M(\d+)/(\d+)", f)) and i == spines.index(True):
                    time_signatures.append((cursor[i], int(m.group(1)), int(m.group(2))))
                if spines[i] and (m := re.fullmatch(r"\*MM(\d+(?:\.\d+)?)", f)):
                    tempo = float(m.group(1))
            continue
        if line.startswith("="):
            continue
        for i, field in enumerate(fields):
            if not spines[i] or field == "." or field.startswith("!"):
                continue
            step = None
            for sub in field.split(" "):
                if "q" in sub.lower():  # grace notes take no time
                    continue
                m = TOKEN.match(sub)
                if not m:
                    raise Unsupported(f"token {sub!r}")
                duration = _duration(m.group("recip"), m.group("den"), m.group("dots"))
                step = duration if step is None else max(step, duration)
                if "r" in sub:
                    continue
                pitch = _pitch(sub[m.end():])
                if pitch is None:
                    continue
                ties = open_ties[i]
                if ("_" in sub or "]" in sub) and pitch in ties:
                    notes[i][ties[pitch]][1] += duration
                    if "]" in sub:
                        del ties[pitch]
                    continue
                notes[i].append([cursor[i], duration, pitch])
                if "[" in sub:
                    ties[pitch] = len(notes[i]) - 1
            if step is not None:
                cursor[i] += step
    if not spines or not any(spines):
        raise Unsupported("no **kern spine")
    score = symusic.Score(TPQ)
    score.tempos = [symusic.Tempo(0, tempo)]
    score.time_signatures = [symusic.TimeSignature(int(t * TPQ), n, d) for t, n, d in time_signatures]
    tracks = []
    for i, spine_notes in enumerate(notes):
        if not spines[i] or not spine_notes:
            continue
        arr = np.asarray([[int(round(o * TPQ)), int(round(d * TPQ)), p] for o, d, p in spine_notes], dtype=np.int64)
        track = symusic.Track(f"spine{i}", 0, False)
        track.notes = symusic.Note.from_numpy(arr[:, 0].astype(np.int32), arr[:, 1].astype(np.int32),
                                              arr[:, 2].astype(np.int8), np.full(len(arr), 90, np.int8))
        tracks.append(track)
    score.tracks = tracks
    return score
