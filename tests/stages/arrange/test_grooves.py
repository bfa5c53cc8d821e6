"""Drum grooves (stages/arrange/grooves.py) on hand-made beat grids: levels, backbeats, fills and crashes."""

from __future__ import annotations

import numpy as np

from v2m.stages.arrange import grooves
from v2m.stages.arrange.grooves import CRASH, FAMILIES, KICK, bar_pattern, drum_events, level_of


def bars_on(beats: list[float], meter: int, level: int, strength: int = 1) -> list[dict]:
    return [{"beats": beats[i:i + meter + 1], "strength": [strength] * meter, "level": level, "velocity": 90}
            for i in range(0, len(beats) - 1, meter)]


def test_levels_from_intensity_and_the_styles_clamp():
    assert [level_of(x) for x in (0.0, 0.2, 0.5, 0.9)] == [0, 1, 2, 3]
    assert level_of(0.0, min_level=1) == 1 and level_of(1.0, max_level=2) == 2


def test_silent_level_has_no_hits_and_density_grows_with_level():
    rng = np.random.default_rng(0)
    beats = [0.0, 0.5, 1.0, 1.5, 2.0]
    counts = [len(bar_pattern(FAMILIES["pop"], level, beats, [1, 1, 1, 1], 90, rng)) for level in range(4)]
    assert counts[0] == 0 and counts[0] < counts[1] < counts[2] < counts[3]


def test_backbeat_on_two_and_four_in_four_and_on_three_in_three():
    rng = np.random.default_rng(0)
    four = bar_pattern(FAMILIES["pop"], 2, [0.0, 0.5, 1.0, 1.5, 2.0], [1] * 4, 90, rng)
    assert sorted(t for t, _, p, _ in four if p == grooves.SNARE) == [0.5, 1.5]
    three = bar_pattern(FAMILIES["pop"], 2, [0.0, 0.5, 1.0, 1.5], [1] * 3, 90, rng)
    assert [t for t, _, p, _ in three if p == grooves.SNARE] == [1.0]


def test_strong_beats_get_a_kick_and_a_louder_hit():
    rng = np.random.default_rng(0)
    hits = bar_pattern(FAMILIES["pop"], 2, [0.0, 0.5, 1.0, 1.5, 2.0], [2, 1, 2, 1], 90, rng)
    kicks = sorted(t for t, _, p, _ in hits if p == KICK)
    assert 1.0 in kicks  # beat 3 is strong: a kick even where the pattern has none at this level
    on_strong = [v for t, _, p, v in hits if t == 1.0 and p == grooves.CLOSED_HAT]
    on_weak = [v for t, _, p, v in hits if t == 1.5 and p == grooves.CLOSED_HAT]
    assert on_strong[0] > on_weak[0]


def test_fill_before_and_crash_exactly_on_each_cut_even_when_cuts_are_close():
    beats = [0.5 * k for k in range(17)]  # two bars of 4/4 at 120 BPM... and two more
    cuts = [2.73, 3.61]  # off the grid, 0.88 s apart: the second fill overlaps the first crash
    for name, family in FAMILIES.items():
        events = drum_events(family, bars_on(beats, 4, 2), cuts, rng=np.random.default_rng(1))
        for cut in cuts:
            assert any(abs(t - cut) < 1e-9 and p == family.crash for t, _, p, _ in events), name
            assert any(abs(t - cut) < 1e-9 and p == KICK for t, _, p, _ in events), name
            fill = [e for e in events if cut - 1.0 < e[0] < cut and e[2] in family.fill_notes]
            assert len(fill) >= 2, name
        assert all(p != CRASH or any(abs(t - c) < 1e-9 for c in cuts) for t, _, p, _ in events)  # crashes only on cuts


def test_no_fills_and_no_crashes_when_the_style_turns_them_off():
    beats = [0.5 * k for k in range(9)]
    plain = drum_events(FAMILIES["pop"], bars_on(beats, 4, 2), [], rng=np.random.default_rng(1))
    off = drum_events(FAMILIES["pop"], bars_on(beats, 4, 2), [2.3], fills=False, crashes=False, rng=np.random.default_rng(1))
    assert off == plain
