"""The structure plan: sections, phrases, motifs and cadences, planned from the video before any note.

Music that goes somewhere is built from motifs that return and vary, phrases that end in cadences and sections
that answer each other. Before the notes, v2m plans that form from the video's bars (plan first, then generate,
as in MusiCoT; a bar-level plan above the note model, as CM-HRNN's bar hierarchy) and records it in the controls
artifact, where a user can read and edit it; `generate` follows it (stages/generate/motifs.py).

- **Sections** follow the picture: a cut that starts a phrase starts a section. A section whose pace (bar length,
  motion) matches an earlier one returns as that section (A → A'), otherwise it is new (B, C, ...); a long shot
  is cut into 8-bar sections in the pattern A A' B A''.
- **Phrases** of `PHRASE_BARS` bars inside each section (a 1-bar remainder joins the phrase before it); a short
  bar where a scene starts between downbeats leads into the section as a pickup.
- **Motifs.** A new section's first phrase is a sentence (Caplin's presentation phrase): its first bar states
  a motif, the second restates it a step lower or higher (a sequence), then continuation and cadence. Its next
  phrase answers as a period's consequent: it opens with the first phrase's two bars again. A returning section
  (A', A'') opens with the first section's motif bars — exact, then varied (same rhythm, new ending), or
  transposed by a step (A'').
- **Cadences and breaths.** The last bar of each phrase is a cadence (its last notes on the tonic triad) and
  leaves a breath (a rest) before the next phrase or cut; the last bar of the piece is the final cadence (the tonic
  held, in pieces of more than SHORT_PIECE bars).

A restatement names its source bar and how it is changed: `exact`, `transpose` (by `steps` scale steps) or
`vary` (the same rhythm, the second half's pitches sampled anew).
"""

from __future__ import annotations

from v2m.errors import V2MError

PHRASE_BARS = 4   # bars per phrase (a section's remainder of 1 bar joins the phrase before it)
SECTION_BARS = 8  # a long shot is cut into sections of this many bars
KINDS = ("exact", "transpose", "vary")
ROLES = ("pickup", "motif", "free", "restate", "final")
MAX_STEPS = 7     # a transposition by more than an octave of scale steps is refused
SHORT_PIECE = 4   # bars: a piece this short ends on a sampled cadence, not a held final bar


def bar_beats(controls: dict) -> list[int]:
    """Beats in each bar of a controls payload (a bar without `beats` has the controls' meter)."""
    return [int(bar.get("beats", controls["meter"])) for bar in controls["bars"]]


def plan_structure(controls: dict) -> dict:
    """The structure plan of a controls payload's bars (see the module docstring)."""
    bars = controls["bars"]
    n = len(bars)
    meter = int(controls.get("meter") or 4)
    first = 1 if n > 1 and int(bars[0].get("beats", meter)) < meter else 0  # a pickup bar opens no section
    starts = sorted({first} | {i for i, bar in enumerate(bars) if bar.get("phrase") and i > first})
    runs = [(a, b - a) for a, b in zip(starts, starts[1:] + [n])]
    runs = [(a + k, min(SECTION_BARS, length - k)) for a, length in runs for k in range(0, length, SECTION_BARS)]
    runs = _merge_short_tail(runs)

    labels = _labels(runs, bars, controls)
    plan_bars = [{"section": labels[0] if runs else "A", "role": "free", "cadence": False, "breath": False}
                 for _ in range(n)]
    if first:
        plan_bars[0]["role"] = "pickup"
    sections, phrases = [], []
    first_of: dict[str, int] = {}  # a letter → the start bar of its first section
    for (start, length), label in zip(runs, labels):
        sections.append({"label": label, "start": start, "bars": length})
        for i in range(start, start + length):
            plan_bars[i]["section"] = label
        letter = label.rstrip("'")
        # a short bar at the cut (the scene starts between downbeats) leads into the section like a pickup: its
        # motif and phrases start on the first full bar
        lead = 1 if length > 2 and int(bars[start].get("beats", meter)) < meter else 0
        if lead:
            plan_bars[start]["role"] = "pickup"
        start, length = start + lead, length - lead
        section_phrases = _phrases(start, length)
        phrases += [{"start": a, "bars": b} for a, b in section_phrases]
        if letter in first_of:  # a returning section opens with the first one's motif bars
            source, primes = first_of[letter], len(label) - len(letter)
            _restate(plan_bars, bars, start, source, "exact" if primes % 2 else "transpose", 0 if primes % 2 else 1)
            if section_phrases[0][1] > 2:
                _restate(plan_bars, bars, start + 1, source + 1, "vary", 0)
        else:
            first_of[letter] = start
            a, b = section_phrases[0]
            plan_bars[a]["role"] = "motif"
            if b > 2:  # a sentence: the motif, then its sequence a step away
                _restate(plan_bars, bars, a + 1, a, "transpose", -1 if start % 2 else 1)
            for c, d in section_phrases[1:]:  # a consequent opens like the antecedent
                _restate(plan_bars, bars, c, a, "exact", 0)
                if d > 2 and b > 2:
                    _restate(plan_bars, bars, c + 1, a + 1, "vary", 0)
        for a, b in section_phrases:
            plan_bars[a + b - 1]["cadence"] = True
            plan_bars[a + b - 1]["breath"] = a + b < n
    if n:  # the last bar holds the tonic; in a piece of a few bars it is sampled as a cadence instead (half the music)
        plan_bars[-1].update(cadence=True, breath=False)
        if n > SHORT_PIECE:
            plan_bars[-1]["role"] = "final"
            plan_bars[-1].pop("source", None), plan_bars[-1].pop("kind", None), plan_bars[-1].pop("steps", None)
    return {"phrase_bars": PHRASE_BARS, "sections": sections, "phrases": phrases, "bars": plan_bars}


def _merge_short_tail(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A section of one bar after a long one (the end of a long shot) joins it."""
    out: list[tuple[int, int]] = []
    for start, length in runs:
        if out and length == 1 and out[-1][0] + out[-1][1] == start and out[-1][1] >= SECTION_BARS:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((start, length))
    return out


def _phrases(start: int, length: int) -> list[tuple[int, int]]:
    """A section's phrases: PHRASE_BARS each; a remainder of 1 joins the last phrase, more is a phrase."""
    out = [(start + k, min(PHRASE_BARS, length - k)) for k in range(0, length, PHRASE_BARS)]
    if len(out) > 1 and out[-1][1] == 1:
        out[-2:] = [(out[-2][0], out[-2][1] + 1)]
    return out


def _restate(plan_bars: list[dict], bars: list[dict], i: int, source: int, kind: str, steps: int) -> None:
    """Bar i restates bar `source` — only where both have the same number of beats and the source comes first."""
    if not 0 <= source < i < len(bars) or bars[i].get("beats") != bars[source].get("beats"):
        return
    plan_bars[i].update(role="restate", source=source, kind=kind, steps=steps)


def _labels(runs: list[tuple[int, int]], bars: list[dict], controls: dict) -> list[str]:
    """A letter per section: a section whose pace matches an earlier one's (bar length within 12 %, motion
    within 12 velocity steps) returns as it, primed (A', A''); runs cut from one long shot go A A' B A''."""
    pace = []
    for start, length in runs:
        span = bars[start:start + length]
        ends = [float(b["start"]) for b in bars[start + 1:start + length + 1]]
        if len(ends) < len(span):
            ends.append(float(controls.get("duration") or span[-1]["start"]))
        seconds = [(e - float(b["start"])) / max(int(b.get("beats", 1)), 1) for b, e in zip(span, ends)]
        pace.append((sum(seconds) / len(seconds), sum(int(b.get("velocity", 64)) for b in span) / len(span)))
    labels: list[str] = []
    letters: list[tuple[str, tuple[float, float]]] = []
    for k, ((start, _), (beat, velocity)) in enumerate(zip(runs, pace)):
        position = _shot_index(runs, bars, k)  # > 0: cut from a long shot, no cut before it
        match = None
        if position % 4 in (1, 3) or (position and position % 4 == 0):
            match = labels[k - position].rstrip("'")  # the shot's own letter returns: A A' . A''
        elif position % 4 == 0:
            match = next((letter for letter, (b, v) in letters
                          if abs(b - beat) <= 0.12 * b and abs(v - velocity) <= 12), None)
        if match is None:  # a new pace, or the contrasting third section of a long shot
            match = chr(ord("A") + len(letters)) if len(letters) < 26 else "Z"
            letters.append((match, (beat, velocity)))
        primes = sum(1 for label in labels if label.rstrip("'") == match)
        labels.append(match + "'" * primes)
    return labels


def _shot_index(runs: list[tuple[int, int]], bars: list[dict], k: int) -> int:
    """How many sections of the same shot come before section k."""
    i = k
    while i > 0 and not bars[runs[i][0]].get("phrase"):
        i -= 1
    return k - i


# ---------------------------------------------------------------- a plan read back (possibly hand-edited)

def check_structure(plan: dict, n_bars: int, beats: list[int], where: str = "data.structure") -> dict:
    """A structure plan that `generate` can follow, or one line naming the first field that is wrong."""
    def fail(field: str, problem: str):
        raise V2MError(f"{where}{'.' + field if field else ''}: {problem}",
                       "fix the hand-edited plan, or delete `structure` and generate plans it again")

    if not isinstance(plan, dict):
        fail("", "expected an object")
    rows = plan.get("bars")
    if not isinstance(rows, list) or len(rows) != n_bars:
        fail("bars", f"expected a list of {n_bars} bars (one per bar of the controls), "
                     f"found {len(rows) if isinstance(rows, list) else type(rows).__name__}")
    for key in ("sections", "phrases"):
        if not isinstance(plan.get(key, []), list):
            fail(key, "expected a list of {\"start\": bar, \"bars\": count}")
        for k, span in enumerate(plan.get(key) or []):
            if not isinstance(span, dict) or not all(isinstance(span.get(f), int) and not isinstance(span.get(f), bool)
                                                   for f in ("start", "bars")):
                fail(f"{key}[{k}]", "expected {\"start\": bar, \"bars\": count}")
            if span["start"] < 0 or span["bars"] < 1 or span["start"] + span["bars"] > n_bars:
                fail(f"{key}[{k}]", f"bars {span['start']}..{span['start'] + span['bars'] - 1} run past the "
                                    f"video's {n_bars} bars")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            fail(f"bars[{i}]", "expected an object")
        role = row.get("role", "free")
        if role not in ROLES:
            fail(f"bars[{i}].role", f"'{role}' is not one of {', '.join(ROLES)}")
        for flag in ("cadence", "breath"):
            if not isinstance(row.get(flag, False), bool):
                fail(f"bars[{i}].{flag}", "expected true or false")
        if role != "restate":
            continue
        source = row.get("source")
        if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source < i:
            fail(f"bars[{i}].source", f"{source!r} is not an earlier bar (bar {i} may restate "
                                      f"{f'one of bars 0..{i - 1}' if i else 'none: it is the first'})")
        if row.get("kind") not in KINDS:
            fail(f"bars[{i}].kind", f"{row.get('kind')!r} is not one of {', '.join(KINDS)}")
        steps = row.get("steps", 0)
        if not isinstance(steps, int) or isinstance(steps, bool) or abs(steps) > MAX_STEPS:
            fail(f"bars[{i}].steps", f"{steps!r}: expected a whole number of scale steps within ±{MAX_STEPS}")
        if beats[source] != beats[i]:
            fail(f"bars[{i}].source", f"bar {source} has {beats[source]} beats, bar {i} has {beats[i]}: "
                                      "a restatement needs bars of one length")
    return plan
