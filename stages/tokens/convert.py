"""MIDI ↔ ids: a score becomes BOS, global controls, then each bar as `Bar`, its controls and its REMI tokens; ids
become a score again, on the video's beat grid when one is given (tokens/beat_grid.py).

The vocabulary is tokens/vocab.py; the controls' features are tokens/controls.py.
"""

from __future__ import annotations

import numpy as np
import symusic

from v2m.errors import V2MError
from v2m.stages.tokens import controls as ctl
from v2m.stages.tokens.beat_grid import apply_beat_grid
from v2m.stages.tokens.vocab import DEFAULT_TEMPO_BPM, Vocab, strip_controls, tempo_class_centre


def encode_score(score, vocab: Vocab) -> list[int]:
    """symusic.Score → ids: BOS, global controls, then each bar as `Bar`, its controls, its REMI tokens; EOS."""
    analysis = ctl.analyse_score(score, vocab)
    if not analysis.base_ids:
        raise V2MError("the MIDI has no notes the tokenizer can keep (none in pitch range "
                       f"{vocab.spec.pitch_range[0]}..{vocab.spec.pitch_range[1] - 1})")
    return ctl.assemble(analysis, vocab)


def decode_ids(ids, vocab: Vocab, beat_times=None, downbeats=None, *, velocities=None, tempo_bpm: float | None = None,
               program: int = 0, end: float | None = None):
    """ids → symusic.Score (ticks). Controls are stripped.

    With `beat_times` (seconds) the tempo map makes bar i start at `downbeats[i]` and the music's beats land on
    the grid (see tokens/beat_grid.py: apply_beat_grid); otherwise a fixed tempo: `tempo_bpm`, else the
    TempoClass token's centre, else 120. `velocities` (1..127 per bar) sets each bar's note velocity; default 90.
    `end` (seconds, with a grid): the video's length — the last bar ends there and nothing sounds past it.
    """
    base = strip_controls(ids, vocab)
    if base:
        score = vocab.miditok.decode([base])
    else:
        score = symusic.Score(vocab.miditok.time_division)
        score.tracks = [symusic.Track("music", program, False)]
    for track in score.tracks:
        track.program = program
    _set_velocities(score, velocities)
    if beat_times is not None and len(beat_times) >= 2:
        apply_beat_grid(score, list(map(float, beat_times)), None if downbeats is None else list(map(float, downbeats)),
                        end=end)
    else:
        bpm = tempo_bpm or _tempo_from_ids(ids, vocab) or DEFAULT_TEMPO_BPM
        score.tempos = [symusic.Tempo(0, float(bpm))]
    return score


def _tempo_from_ids(ids, vocab: Vocab) -> float | None:
    names = vocab.names
    for token in list(ids)[:8]:
        name = names[int(token)] if 0 <= int(token) < len(names) else ""
        if name.startswith("TempoClass_"):
            return tempo_class_centre(int(name.split("_")[1]), vocab.stats)
    return None


def _set_velocities(score, velocities) -> None:
    if not score.tracks:
        return
    from miditok.utils import get_bars_ticks  # miditok's import costs ~1 s: only when velocities are set

    bars = np.asarray(get_bars_ticks(score, only_notes_onsets=False), dtype=np.int64) if velocities else None
    for track in score.tracks:
        arr = track.notes.numpy()
        if not len(arr["time"]):
            continue
        if velocities:
            index = np.clip(np.searchsorted(bars, arr["time"], side="right") - 1, 0, len(velocities) - 1)
            arr["velocity"] = np.clip(np.asarray(velocities, dtype=np.int64)[index], 1, 127).astype(arr["velocity"].dtype)
        else:
            arr["velocity"][:] = 90
        track.notes = symusic.Note.from_numpy(arr["time"], arr["duration"], arr["pitch"], arr["velocity"])
