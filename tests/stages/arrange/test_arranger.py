"""The arranger on constructed beat grids and melodies whose chords, cuts and still bars are known."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import symusic

from v2m.stages.arrange.arranger import arrange, arrange_detailed, arrangement_settings
from v2m.stages.arrange.harmony import QUALITIES
from v2m.stages.arrange.styles import Style, load_style, style_names

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
# I  IV  V  vi in C, as (root pitch class, intervals) — the known chords of the melody below
PROGRESSION = [(0, "maj"), (5, "maj"), (7, "maj"), (9, "min")]


def grid_controls(n_bars: int = 10, meter: int = 4, period: float = 0.5, cuts=(), still=(), seed: int = 0) -> dict:
    """A v2m.controls payload on a drifting beat grid (±8 % beat-to-beat), bars in `still` motionless."""
    rng = np.random.default_rng(seed)
    periods = period * (1 + 0.08 * rng.standard_normal(n_bars * meter))
    beats = np.concatenate([[0.0], np.cumsum(periods)])
    downbeats = beats[:-1:meter]
    bars = []
    for i, start in enumerate(downbeats):
        moving = i not in still
        strength = [2] + [int(rng.integers(0, 3)) for _ in range(meter - 1)] if moving else [0] * meter
        bars.append({"start": round(float(start), 3), "density": 1 + i % 3 if moving else 0, "strength": strength,
                     "phrase": False, "velocity": 70 + 12 * (i % 4) if moving else 15})
    return {"meter": meter, "mode": "major", "duration": round(float(beats[-1]), 3),
            "beat_times": [round(float(b), 3) for b in beats[:-1]], "downbeats": [round(float(d), 3) for d in downbeats],
            "bars": bars, "n_density": 4, "rhythm": {"cuts": list(cuts), "envelope": [], "frame_rate": 30.0}}


def melody_on_grid(controls: dict, progression=PROGRESSION, tpq: int = 480) -> symusic.Score:
    """A tick Score whose tempo map is the controls' beat grid (as decode_ids makes it): per bar one
    chord of `progression`, its tones on beats 1-3 and a neighbour tone (a step above the root) on beat 4."""
    beats = controls["beat_times"] + [controls["duration"]]
    score = symusic.Score(tpq)
    for k in range(len(beats) - 1):
        score.tempos.append(symusic.Tempo(k * tpq, qpm=60.0 / (beats[k + 1] - beats[k])))
    track = symusic.Track("generated", 0, False)
    meter = controls["meter"]
    for bar in range(len(controls["downbeats"])):
        root, quality = progression[bar % len(progression)]
        tones = [60 + root + interval for interval in QUALITIES[quality]]
        line = [tones[0], tones[1], tones[2], tones[0] + 14][:meter]
        for k, pitch in enumerate(line):
            track.notes.append(symusic.Note((bar * meter + k) * tpq, tpq * 9 // 10, pitch, 80))
    score.tracks.append(track)
    return score


def seconds(score) -> symusic.Score:
    return score.to("second")


def drum_notes(score):
    return [n for t in seconds(score).tracks if t.is_drum for n in t.notes]


@pytest.fixture(scope="module")
def piece():
    controls = grid_controls(n_bars=12, cuts=(6.23, 13.41, 19.05), still=(4, 5))
    return controls, melody_on_grid(controls)


def test_tracks_named_per_role_with_style_programs_and_time_unit_kept(piece):
    controls, score = piece
    for name in style_names():
        style = load_style(name)
        out = arrange(score, controls, name, seed=0)
        assert [t.name for t in out.tracks] == ["melody", "harmony", "bass", "drums"]
        programs = {t.name: t.program for t in out.tracks}
        assert programs == {"melody": style.instruments.melody, "harmony": style.instruments.harmony,
                            "bass": style.instruments.bass, "drums": style.instruments.drum_kit}
        assert [t.is_drum for t in out.tracks] == [False, False, False, True]
        assert all(len(t.notes) > 0 for t in out.tracks)
        assert out.tpq == score.tpq and out.ttype == score.ttype and len(out.tempos) == len(score.tempos)
    # the melody's notes keep their timing (only octave and velocity may change)
    original = sorted(round(n.time, 3) for n in seconds(score).tracks[0].notes)
    arranged = sorted(round(n.time, 3) for n in seconds(out).tracks[0].notes)
    assert arranged == original


def test_crash_exactly_on_every_cut_and_a_fill_before_it(piece):
    controls, score = piece
    for name in style_names():
        hits = drum_notes(arrange(score, controls, name, seed=3))
        beats = np.array(controls["beat_times"])
        for cut in controls["rhythm"]["cuts"]:
            crashes = [n for n in hits if n.pitch == 49 and abs(n.time - cut) <= 0.05]
            assert crashes, f"{name}: no crash within 50 ms of the cut at {cut}"
            assert min(abs(n.time - cut) for n in crashes) < 0.003  # snapped to the cut itself, not the grid
            beat = float(np.median(np.diff(beats)))
            fill = [n for n in hits if cut - 1.7 * beat <= n.time < cut - 1e-3]
            assert len(fill) >= 2, f"{name}: no fill before the cut at {cut}"


def test_bass_on_strong_beats_plays_the_bars_chord(piece):
    controls, score = piece
    for name in ("pop", "folk", "cinematic", "chiptune"):
        result = arrange_detailed(score, controls, name, seed=0)
        bass = [n for n in seconds(result.score).tracks[2].notes]
        strong = [bar.beats[j] for bar in result.bars for j, s in enumerate(bar.strength) if s == 2]
        inside = total = 0
        for beat in strong:
            sounding = [n for n in bass if n.time - 1e-3 <= beat < n.time + n.duration]
            chord = next(c for c in result.chords if c.start - 1e-6 <= beat < c.end)
            if sounding:
                total += 1
                inside += sounding[-1].pitch % 12 in chord.pitch_classes
        assert total >= 0.9 * len(strong)
        assert inside / total >= 0.9, f"{name}: {inside}/{total} strong-beat bass notes in the chord"
        # the estimated chords are the constructed ones (bar-level chords are the whole-bar chord), but for the
        # closing cadence the arranger writes itself: V7 into the tonic, held on the last bar
        bar_chords = [c for c in result.chords if any(abs(c.start - b.start) < 1e-6 for b in result.bars)]
        truth = [PROGRESSION[i % 4] for i in range(len(result.bars) - 2)]
        correct = sum((c.root, c.quality) == t for c, t in zip(bar_chords, truth))
        assert correct >= 0.9 * len(truth)
        tonic = result.key.tonic
        assert (result.chords[-1].root, result.chords[-1].start) == (tonic, result.bars[-1].start)
        assert (result.chords[-2].root, result.chords[-2].quality) == ((tonic + 7) % 12, "7")


def test_drums_follow_motion_and_rest_in_still_bars(piece):
    controls, score = piece
    result = arrange_detailed(score, controls, "cinematic", seed=0)
    hits = drum_notes(result.score)
    counts = [sum(b.start <= n.time < b.beats[-1] for n in hits) for b in result.bars]
    # the still passage (two bars, no cut in them) is silent
    assert [result.bars[i].level for i in (4, 5)] == [0, 0] and counts[4] == counts[5] == 0
    motions = [b.motion for b in result.bars]
    assert np.corrcoef(motions, counts)[0, 1] > 0.5
    # pop keeps a sparse pulse even when still (min_level = 1) but far fewer hits than its busiest bar
    pop = arrange_detailed(score, controls, "pop", seed=0)
    pop_hits = drum_notes(pop.score)
    pop_counts = [sum(b.start <= n.time < b.beats[-1] for n in pop_hits) for b in pop.bars]
    assert 0 < pop_counts[4] <= max(pop_counts) / 3 and 0 < pop_counts[5] <= max(pop_counts) / 3


def test_accents_on_strong_beats_and_velocity_follows_motion(piece):
    controls, score = piece
    result = arrange_detailed(score, controls, "pop", seed=0)
    hits = drum_notes(result.score)
    cuts = controls["rhythm"]["cuts"]
    strong, weak = [], []
    for bar in result.bars:
        for j, s in enumerate(bar.strength):
            t = bar.beats[j]
            if any(abs(t - c) < 1.2 for c in cuts) or bar.level < 2:
                continue  # fills and crashes are louder on purpose; judge the groove itself
            on = [n.velocity for n in hits if abs(n.time - t) < 1e-3]
            if on:
                (strong if s == 2 else weak).append(max(on))
    assert strong and weak and np.mean(strong) > np.mean(weak)
    melody = seconds(result.score).tracks[0].notes
    per_bar = [np.mean([n.velocity for n in melody if b.start <= n.time < b.beats[-1]]) for b in result.bars[:-2]]
    assert np.corrcoef([b.motion for b in result.bars[:-2]], per_bar)[0, 1] > 0.8


def test_fade_at_the_end(piece):
    """The last notes of each part are softer than the middle's; the closing chord (from the last bar's start)
    is inside the fade, which is the style's 3 s but at most 15 % of the piece."""
    from v2m.stages.arrange.arranger import fade_length

    controls, score = piece
    out = seconds(arrange(score, controls, "pop", seed=0))
    end = controls["duration"]
    fade = fade_length(load_style("pop"), end)
    assert fade == pytest.approx(min(load_style("pop").dynamics.fade_seconds, 0.15 * end))
    assert fade_length(load_style("pop"), 4.0) == pytest.approx(0.6)  # a 4 s clip fades over 0.6 s, not 3 s
    for track in out.tracks[:3]:
        last = [n.velocity for n in track.notes if n.time > end - fade]
        middle = [n.velocity for n in track.notes if end - 8.0 < n.time < end - 4.0]
        assert last and np.mean(last) < 0.85 * np.mean(middle)
    assert all(n.time < end for t in out.tracks[1:] for n in t.notes)


def test_same_seed_same_bytes_other_seed_differs(piece):
    controls, score = piece
    first = arrange(score, controls, "folk", seed=7).dumps_midi()
    assert arrange(score, controls, "folk", seed=7).dumps_midi() == first
    assert arrange(score, controls, "folk", seed=8).dumps_midi() != first


def test_second_based_input_and_empty_melody():
    controls = grid_controls(n_bars=4, cuts=(3.1,))
    empty = symusic.Score(480, ttype="second")
    result = arrange_detailed(empty, controls, "pop", seed=0)
    assert result.score.ttype == empty.ttype
    assert result.key.name == "C major"  # nothing to analyse: the controls' mode decides
    assert {t.name for t in result.score.tracks} == {"melody", "harmony", "bass", "drums"}
    assert len(result.score.tracks[1].notes) > 0


def test_controls_without_bars_are_one_clear_line():
    from v2m.errors import V2MError

    with pytest.raises(V2MError, match="no bars"):
        arrange(symusic.Score(480), {"beat_times": [], "downbeats": [], "bars": [], "duration": 4.0}, "pop")


def test_style_without_drums_or_bass_leaves_those_tracks_out(tmp_path, piece):
    controls, score = piece
    custom = tmp_path / "duo.toml"
    custom.write_text('[harmony]\npattern = "pad"\n[bass]\npattern = "none"\n[drums]\nfamily = "none"\n')
    out = arrange(score, controls, str(custom), seed=0)
    assert [t.name for t in out.tracks] == ["melody", "harmony"]
    record = arrangement_settings(str(custom), seed=0)
    assert record["style"] == "duo" and record["settings"]["drums"]["family"] == "none"
    # the recorded settings alone replay the same arrangement (the TOML file need not travel)
    custom.unlink()
    assert arrange(score, controls, json.loads(json.dumps(record["settings"])), seed=0).dumps_midi() == out.dumps_midi()


@pytest.mark.parametrize("name", ["pop", "cinematic", "ambient", "chiptune", "folk"])
def test_fluidsynth_render_does_not_clip(tmp_path, name):
    import soundfile

    controls = grid_controls(n_bars=6, period=0.42, cuts=(4.05,))
    for bar in controls["bars"]:
        bar["velocity"], bar["density"], bar["strength"] = 127, 3, [2] * 4  # loudest possible motion
    midi, wav = tmp_path / "in.mid", tmp_path / "out.wav"
    arrange(melody_on_grid(controls), controls, name, seed=0).dump_midi(str(midi))
    subprocess.run(["fluidsynth", "-ni", "-F", str(wav), "-r", "44100", SOUNDFONT, str(midi)], check=True,
                   capture_output=True, timeout=60)
    samples, _ = soundfile.read(str(wav))
    peak = float(np.abs(samples).max())
    assert 0.02 < peak < 1.0, f"{name}: peak {peak:.3f}"


@pytest.mark.parametrize("meter", [3, 4])
def test_every_accompaniment_onset_sits_on_the_video_grid(meter):
    # no cuts (fills and crashes are placed on purpose off the grid): every onset of harmony, bass and drums
    # falls on a beat or on an even subdivision of its own (drifting) beat — 1/2, 1/3 or 1/4 — or within a
    # strum's 30 ms spread after one
    controls = grid_controls(n_bars=6, meter=meter, seed=5)
    for name in style_names():
        out = seconds(arrange(melody_on_grid(controls), controls, name, seed=1))
        beats = controls["beat_times"] + [controls["duration"]]
        grid = sorted({a + (b - a) * k / d for a, b in zip(beats[:-1], beats[1:]) for d in (1, 2, 3, 4) for k in range(d)})
        for track in out.tracks[1:]:
            for note in track.notes:
                nearest = min(grid, key=lambda g: abs(g - note.time))
                assert -0.002 <= note.time - nearest <= 0.032, f"{name}/{track.name}: onset {note.time:.3f} off the grid"


def test_velocity_follows_the_video_envelope_inside_steady_bars():
    controls = grid_controls(n_bars=8, seed=2)
    for bar in controls["bars"]:
        bar["density"], bar["velocity"] = 2, 80  # the bars say nothing changes...
    rate = 30.0
    frames = int(controls["duration"] * rate)
    swell = np.clip(np.arange(frames) / frames * 2.0 - 0.5, 0.0, 1.0)  # ...the picture itself swells
    controls["rhythm"] = {"cuts": [], "envelope": [round(float(v), 3) for v in swell], "frame_rate": rate}
    style = load_style("pop")
    out = seconds(arrange(melody_on_grid(controls), controls, style, seed=0))
    melody = out.tracks[0].notes
    early = [n.velocity for n in melody if n.time < 4.0]
    late = [n.velocity for n in melody if controls["duration"] - 8.0 < n.time < controls["duration"] - style.dynamics.fade_seconds]
    assert np.mean(late) > np.mean(early) + 15


def test_track_levels_live_in_the_velocities_so_they_survive_note_only_renderers(piece, tmp_path):
    controls, score = piece
    quiet = tmp_path / "quiet.toml"
    quiet.write_text("[mix]\nmelody = 50\nharmony = 100\nbass = 100\ndrums = 100\n")
    loud = seconds(arrange(score, controls, Style(), seed=0))  # the default style: every level 100 but drums
    soft = seconds(arrange(score, controls, str(quiet), seed=0))
    ratio = np.mean([n.velocity for n in soft.tracks[0].notes]) / np.mean([n.velocity for n in loud.tracks[0].notes])
    assert abs(ratio - 0.5) < 0.03
    assert all(c.number == 7 and c.value == 100 for t in soft.tracks for c in t.controls)
