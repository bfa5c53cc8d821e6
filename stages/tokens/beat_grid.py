"""Pinning a piece's bars and beats to seconds: a tempo map from a video's beat grid, and a MIDI's own grid.

`decode` gives generated tokens the video's timing by writing a tempo map (apply_beat_grid) under which
bar i starts at the video's i-th downbeat and the music's beats land on the tracked beats; `encode-tokens
MIDI` records the MIDI's own beat and bar times (beat_grid_seconds), so decoding those tokens against
them gives the original timing back. Both read the score in ticks and speak seconds.
"""

from __future__ import annotations

from v2m.stages.tokens.vocab import DEFAULT_TEMPO_BPM, Vocab

# ---------------------------------------------------------------- tempo map from a beat grid

def apply_beat_grid(score, beat_times: list[float], downbeats: list[float] | None, end: float | None = None) -> None:
    """Set `score.tempos` so that bar i starts at downbeats[i] and the bar's beats land on the grid's beats.

    Anchors (tick → seconds): every bar start ↔ its downbeat; inside a bar whose music beat count equals the
    grid's, every beat ↔ its grid beat, else the bar is stretched evenly. Past the grid the last beat period
    continues. If the first bar starts after 0 s, one empty lead-in bar (same meter) is inserted so the
    music's bars still line up with MIDI bars. Tempos are piecewise constant between anchors. With `end`
    (seconds: the video's length) the last bar ends there, and notes sounding past it are cut at it.
    """
    import symusic
    from miditok.utils import get_bars_ticks, get_beats_ticks

    anchors = grid_anchors(score, beat_times, downbeats, get_bars_ticks, get_beats_ticks, end)
    start_tick, start_time = anchors[0]
    tpq = score.ticks_per_quarter
    tempos = []
    if start_time > 1e-3:
        lead = _first_bar_ticks(score)
        score.shift_time(lead, inplace=True)
        if score.time_signatures and score.time_signatures[0].time != 0:
            first = score.time_signatures[0]
            score.time_signatures.insert(0, symusic.TimeSignature(0, first.numerator, first.denominator))
        anchors = [(tick + lead, t) for tick, t in anchors]
        tempos.append(symusic.Tempo(0, 60.0 * lead / tpq / start_time))
    for (tick_a, t_a), (tick_b, t_b) in zip(anchors, anchors[1:]):
        if tick_b > tick_a and t_b > t_a:
            tempos.append(symusic.Tempo(int(tick_a), 60.0 * (tick_b - tick_a) / tpq / (t_b - t_a)))
    score.tempos = tempos or [symusic.Tempo(0, DEFAULT_TEMPO_BPM)]
    if end is not None and downbeats is not None:
        _cut_at(score, anchors[-1][0])


def _cut_at(score, last_tick: int) -> None:
    """Notes sounding past `last_tick` are cut at it; notes starting at or after it are dropped."""
    import symusic

    for track in score.tracks:
        kept = []
        for note in track.notes:
            if note.time >= last_tick:
                continue
            kept.append(symusic.Note(note.time, min(note.duration, last_tick - note.time), note.pitch, note.velocity))
        track.notes = kept


def _bar_ticks(score, tick: int) -> int:
    """The length in ticks of the bar starting at `tick`, by the time signature in force there."""
    tpq = score.ticks_per_quarter
    signatures = [ts for ts in score.time_signatures if ts.time <= tick]
    ts = signatures[-1] if signatures else None
    return int(round(tpq * 4 * ts.numerator / ts.denominator)) if ts is not None else 4 * tpq


def _first_bar_ticks(score) -> int:
    tpq = score.ticks_per_quarter
    if score.time_signatures:
        ts = score.time_signatures[0]
        return int(round(tpq * 4 * ts.numerator / ts.denominator))
    return 4 * tpq


def grid_anchors(score, beat_times, downbeats, get_bars_ticks, get_beats_ticks, end: float | None = None
                 ) -> list[tuple[int, float]]:
    """(tick, seconds) pairs pinning the music's bars and beats to the grid (see apply_beat_grid); with `end` the
    last anchor is the last bar's nominal end (its time signature's length) at `end` seconds."""
    import numpy as np

    beat_times = sorted(beat_times)
    period = float(np.median(np.diff(beat_times))) if len(beat_times) > 1 else 0.5
    end_tick = max(int(score.end()), 1)
    bars = [int(b) for b in get_bars_ticks(score, only_notes_onsets=False)] or [0]
    beats = [int(b) for b in get_beats_ticks(score, only_notes_onsets=False)] or [0]
    if end is not None and downbeats is not None:
        # the piece has one bar per downbeat (generate forces them); a bar after those holds only the tails of
        # notes sounding past the last bar's end, which is pinned to the video's end
        bars = bars[:max(len(downbeats), 1)]
        bars.append(bars[-1] + _bar_ticks(score, bars[-1]))
    else:
        bars.append(max(end_tick, bars[-1] + 1))  # closing edge of the last bar
    if downbeats is None:
        # no bar grid: pin the music's beats one to one on the grid's beats
        times = _extend(beat_times, len(beats) + 1, period)
        return list(zip(beats + [beats[-1] + (beats[-1] - beats[-2] if len(beats) > 1 else score.ticks_per_quarter)], times))
    downbeats = sorted(downbeats) or [beat_times[0]]
    grid_bar_len = float(np.median(np.diff(downbeats))) if len(downbeats) > 1 else period * 4
    down = _extend(downbeats, len(bars), grid_bar_len)
    if end is not None and len(down) >= len(bars) and end > down[len(bars) - 2] + 1e-3:
        down[len(bars) - 1] = float(end)
    anchors: list[tuple[int, float]] = []
    grid = np.asarray(beat_times)
    beats_sorted = np.asarray(sorted(beats), dtype=np.int64)
    # each bar's music beats and grid beats by binary search: linear in the piece's length, not bars × beats
    beat_lo = np.searchsorted(beats_sorted, bars[:-1], side="left")
    beat_hi = np.searchsorted(beats_sorted, bars[1:], side="left")
    grid_lo = np.searchsorted(grid, np.asarray(down[:len(bars) - 1]) - 1e-6, side="left")
    grid_hi = np.searchsorted(grid, np.asarray(down[1:len(bars)]) - 1e-6, side="left")
    for i in range(len(bars) - 1):
        b0, t0 = bars[i], down[i]
        music_beats = [int(b) for b in beats_sorted[beat_lo[i]:beat_hi[i]]] if beat_hi[i] > beat_lo[i] else []
        grid_beats = [float(t) for t in grid[grid_lo[i]:max(grid_hi[i], grid_lo[i])]]
        if len(grid_beats) == len(music_beats) and music_beats and abs(grid_beats[0] - t0) < 1e-3:
            anchors += list(zip(music_beats, grid_beats))
        else:
            anchors.append((b0, t0))
    anchors.append((bars[-1], down[len(bars) - 1]))
    return anchors


def _extend(times: list[float], n: int, step: float) -> list[float]:
    """`times` continued at `step` seconds until it has at least `n` entries."""
    out = list(times)
    step = step if step > 0 else 0.5
    while len(out) < n:
        out.append(out[-1] + step)
    return out


# ---------------------------------------------------------------- a MIDI's own beat grid

def beat_grid_seconds(score, vocab: Vocab | None = None) -> tuple[list[float], list[float]]:
    """The beat and bar-start times (seconds, 1 ms) of a score under its own tempo map, to the end of its
    last bar: what `decode` needs to give tokens encoded from this MIDI their original timing back."""
    from miditok.utils import get_bars_ticks, get_beats_ticks

    beats = [int(t) for t in get_beats_ticks(score, only_notes_onsets=False)]
    bars = [int(t) for t in get_bars_ticks(score, only_notes_onsets=False)]
    seconds = ticks_to_seconds(beats + bars, score)
    return [round(t, 3) for t in seconds[:len(beats)]], [round(t, 3) for t in seconds[len(beats):]]


def ticks_to_seconds(ticks: list[int], score) -> list[float]:
    """Tick positions → seconds under `score`'s tempo map (120 qpm before the first tempo event)."""
    tpq = score.ticks_per_quarter
    changes = sorted((int(t.time), float(t.qpm)) for t in score.tempos) or [(0, DEFAULT_TEMPO_BPM)]
    if changes[0][0] > 0:
        changes.insert(0, (0, DEFAULT_TEMPO_BPM))
    starts, elapsed = [], 0.0
    for i, (tick, qpm) in enumerate(changes):
        if i:
            prev_tick, prev_qpm = changes[i - 1]
            elapsed += (tick - prev_tick) / tpq * 60.0 / prev_qpm
        starts.append(elapsed)
    out = []
    import bisect

    keys = [c[0] for c in changes]
    for tick in ticks:
        i = max(bisect.bisect_right(keys, tick) - 1, 0)
        out.append(starts[i] + (tick - changes[i][0]) / tpq * 60.0 / changes[i][1])
    return out
