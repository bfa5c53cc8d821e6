"""Synthetic music with known ground truth, for any test that needs MIDI (tokens, controls, decode, evaluate).

`song()` builds a symusic.Score of a melody over block chords with a known meter, tempo, notes per beat
per bar and key; `Truth` says what a correct analysis must find. Everything is made in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHORDS = {  # root-position triads, MIDI pitches around C4
    "C": (60, 64, 67), "Dm": (62, 65, 69), "Em": (64, 67, 71), "F": (65, 69, 72), "G": (67, 71, 74),
    "Am": (57, 60, 64), "Bdim": (59, 62, 65), "E": (64, 68, 71), "D": (62, 66, 69),
}
C_MAJOR_SCALE = (72, 74, 76, 77, 79, 81, 83, 84)
A_MINOR_SCALE = (69, 71, 72, 74, 76, 77, 79, 81)  # natural minor, a fifth above the chords


@dataclass
class Truth:
    """Ground truth of a synthetic song. Times in ticks (tpq) and seconds; `onsets_per_bar` distinct onset times."""

    tpq: int
    meter: int
    qpm: float
    bars: int
    notes_per_beat: list[int]
    chords: list[str]
    mode: str
    onsets_per_bar: list[int] = field(default_factory=list)
    bar_ticks: list[int] = field(default_factory=list)
    beat_seconds: list[float] = field(default_factory=list)
    notes: int = 0


def song(chords=("C", "F", "G", "C"), notes_per_beat=(1, 2, 4, 1), meter: int = 4, qpm: float = 120.0,
         tpq: int = 480, mode: str = "major", velocity: int = 80, chord_track: bool = True):
    """A melody (`notes_per_beat[i]` evenly spaced notes per beat in bar i, walking the scale) over one
    block chord per bar (held for the whole bar). Returns (symusic.Score, Truth)."""
    import symusic

    if len(notes_per_beat) != len(chords):
        raise ValueError("one notes_per_beat entry per chord (bar)")
    scale = C_MAJOR_SCALE if mode == "major" else A_MINOR_SCALE
    bar_len = meter * tpq
    melody = symusic.Track("melody", 0, False)
    harmony = symusic.Track("chords", 0, False)
    onsets_per_bar = []
    step = 0
    for bar, (chord, per_beat) in enumerate(zip(chords, notes_per_beat)):
        start = bar * bar_len
        for pitch in CHORDS[chord]:
            harmony.notes.append(symusic.Note(start, bar_len, pitch, velocity))
        length = tpq // per_beat
        for k in range(meter * per_beat):
            melody.notes.append(symusic.Note(start + k * length, length, scale[step % len(scale)], velocity))
            step += 1
        onsets_per_bar.append(meter * per_beat)
    score = symusic.Score(tpq)
    score.tempos = [symusic.Tempo(0, qpm)]
    score.time_signatures = [symusic.TimeSignature(0, meter, 4)]
    score.tracks = [melody, harmony] if chord_track else [melody]
    beats = len(chords) * meter
    truth = Truth(tpq=tpq, meter=meter, qpm=qpm, bars=len(chords), notes_per_beat=list(notes_per_beat),
                  chords=list(chords), mode=mode, onsets_per_bar=onsets_per_bar,
                  bar_ticks=[i * bar_len for i in range(len(chords))],
                  beat_seconds=[i * 60.0 / qpm for i in range(beats)],
                  notes=len(melody.notes) + (len(harmony.notes) if chord_track else 0))
    return score, truth


def minor_song(**kwargs):
    """An A-minor song (Am–Dm–E–Am) for mode detection."""
    kwargs.setdefault("chords", ("Am", "Dm", "E", "Am"))
    return song(mode="minor", **kwargs)


def midi_bytes(score) -> bytes:
    return bytes(score.dumps_midi())


def empty_midi() -> bytes:
    """A valid MIDI file with a tempo and no notes."""
    import symusic

    score = symusic.Score(480)
    score.tempos = [symusic.Tempo(0, 120.0)]
    score.tracks = [symusic.Track("empty", 0, False)]
    return midi_bytes(score)


def malformed_midi() -> bytes:
    """An MThd header followed by a truncated, garbled track chunk."""
    return b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x10\x00\x00\x90\x3c"
