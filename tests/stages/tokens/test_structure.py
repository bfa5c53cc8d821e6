"""The structure plan (stages/tokens/structure.py): sections at the cuts, returning sections, motifs restated
from earlier bars of the same length, cadences at phrase ends, and one-line refusals of inconsistent edits."""

from __future__ import annotations

import pytest

from v2m.errors import V2MError
from v2m.stages.tokens.structure import check_structure, plan_structure


def controls(n: int, cuts=(), velocity=lambda i: 70, beats=lambda i: 4, bar_seconds=2.0) -> dict:
    bars = [{"start": i * bar_seconds, "beats": beats(i), "phrase": i == 0 or i in cuts, "velocity": velocity(i),
             "density": 3} for i in range(n)]
    return {"meter": 4, "bars": bars, "duration": n * bar_seconds}


def test_sections_start_at_cuts_and_a_matching_scene_returns():
    # scenes at bars 0, 6, 12, 18: the first and third move alike, the second and fourth alike
    plan = plan_structure(controls(24, cuts=(6, 12, 18), velocity=lambda i: 110 if 6 <= i < 12 or i >= 18 else 60))
    assert [(s["label"], s["start"], s["bars"]) for s in plan["sections"]] == [
        ("A", 0, 6), ("B", 6, 6), ("A'", 12, 6), ("B'", 18, 6)]
    rows = plan["bars"]
    # the returning sections open with the first ones' motif bars
    assert rows[12]["role"] == "restate" and rows[12]["source"] == 0
    assert rows[18]["role"] == "restate" and rows[18]["source"] == 6
    # phrases inside sections; each ends in a cadence and breathes before the next (not at the very end)
    assert [(p["start"], p["bars"]) for p in plan["phrases"]][:2] == [(0, 4), (4, 2)]
    assert all(rows[p["start"] + p["bars"] - 1]["cadence"] for p in plan["phrases"])
    assert rows[5]["breath"] and not rows[23]["breath"] and rows[23]["role"] == "final"
    check_structure(plan, 24, [4] * 24)


def test_a_long_shot_becomes_A_A_B_A_and_a_fair_share_of_bars_restate():
    plan = plan_structure(controls(32))
    assert [s["label"] for s in plan["sections"]] == ["A", "A'", "B", "A''"]
    restated = [i for i, row in enumerate(plan["bars"]) if row["role"] == "restate"]
    assert all(plan["bars"][i]["source"] < i for i in restated)
    assert 0.2 <= len(restated) / 32 <= 0.5


def test_restatements_only_between_bars_of_one_length_and_a_pickup_opens_nothing():
    plan = plan_structure(controls(10, cuts=(5,), beats=lambda i: 1 if i == 0 else (3 if i == 2 else 4)))
    rows = plan["bars"]
    assert rows[0]["role"] == "pickup" and plan["sections"][0]["start"] == 1
    for i, row in enumerate(rows):
        if row["role"] == "restate":
            assert (3 if row["source"] == 2 else 4) == (3 if i == 2 else 4)


@pytest.mark.parametrize("edit,field", [
    (lambda p: p["sections"][-1].update(bars=40), "sections[1]"),          # a section longer than the video
    (lambda p: p["bars"][5].update(role="restate", source=9, kind="exact"), "bars[5].source"),  # a later bar
    (lambda p: p["bars"][5].update(role="restate", source=-1, kind="exact"), "bars[5].source"),
    (lambda p: p["bars"][5].update(role="restate", source=1, kind="reverse"), "bars[5].kind"),
    (lambda p: p["bars"][5].update(role="restate", source=1, kind="transpose", steps=30), "bars[5].steps"),
    (lambda p: p["bars"][3].update(role="chorus"), "bars[3].role"),
    (lambda p: p["bars"].pop(), "bars"),
])
def test_an_inconsistent_hand_edit_is_one_line_naming_the_field(edit, field):
    plan = plan_structure(controls(12, cuts=(6,)))
    edit(plan)
    with pytest.raises(V2MError) as e:
        check_structure(plan, 12, [4] * 12)
    assert f"data.structure.{field}:" in str(e.value) and "\n" not in str(e.value)
