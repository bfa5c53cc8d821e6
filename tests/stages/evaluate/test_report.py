"""evaluate: dispatch by what it is given, rhythm+music scoring end to end, folders, gates, bad input.

The helpers at the top make the fixtures (rhythm artifacts by hand, MIDI with symusic, WAV with
numpy); tests/cli/test_evaluate.py imports them.
"""

import json

import numpy as np
import pytest
import soundfile
from symusic import Note, Score, Tempo, TimeSignature, Track

from v2m.artifacts import dumps, make_artifact
from v2m.errors import GateFailed, V2MError
from v2m.stages.evaluate import gates as gates_module
from v2m.stages.evaluate import report as ev
from v2m.stages.evaluate.inputs import evaluate_folder, evaluate_inputs, load_input

TPQ = 480


def rhythm_artifact(beats, duration, bpm=120.0, cuts=(), frame_rate=50.0, meter=4):
    """A v2m.rhythm artifact built by hand (docs/ARTIFACTS.md): envelope peaks on the beats."""
    n = round(duration * frame_rate)
    envelope = np.zeros(n)
    for beat in beats:
        i = int(round(beat * frame_rate))
        if 0 <= i < n:
            envelope[max(0, i - 2):i + 3] = [0.3, 0.7, 1.0, 0.7, 0.3][:len(envelope[max(0, i - 2):i + 3])]
    beats = [round(float(b), 3) for b in beats]
    data = {"kind": "video", "duration": duration, "source_fps": 25.0, "frame_rate": frame_rate, "method": "diff",
            "envelope": [round(float(v), 3) for v in envelope],
            "tempo": {"bpm": bpm, "confidence": 0.9, "half": bpm / 2, "double": bpm * 2, "source": "estimated"},
            "beats": beats, "beat_strength": [1.0] * len(beats), "meter": meter, "downbeats": beats[::meter],
            "cuts": [round(float(c), 3) for c in cuts], "segments": []}
    return make_artifact("v2m.rhythm", data, stage="extract-rhythm", source={"name": "clip.mp4", "sha256": "0" * 64})


def write_rhythm(path, beats, duration, **kwargs):
    path.write_bytes(dumps(rhythm_artifact(beats, duration, **kwargs)))
    return path


def make_score(onsets, bpm=120.0, pitches=(60, 64, 67, 72), duration_beats=0.5):
    """A one-track score with a note at each onset (seconds), at a fixed tempo."""
    score = Score(TPQ)
    score.tempos.append(Tempo(0, qpm=bpm))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track(name="melody", program=0, is_drum=False)
    ticks_per_second = TPQ * bpm / 60
    for i, t in enumerate(onsets):
        track.notes.append(Note(int(round(t * ticks_per_second)), int(duration_beats * TPQ), pitches[i % len(pitches)], 90))
    score.tracks.append(track)
    return score


def write_midi(path, onsets, **kwargs):
    make_score(onsets, **kwargs).dump_midi(str(path))
    return path


def write_clicks(path, onsets, duration, sample_rate=22050):
    """A WAV with a short decaying 1 kHz tone burst at each onset (s); the tail fades out, so it ends without a click."""
    y = np.zeros(int(duration * sample_rate), dtype=np.float32)
    t = np.arange(int(0.15 * sample_rate)) / sample_rate
    envelope = np.exp(-t * 30) * np.minimum(1, t / 0.002) * np.minimum(1, (0.15 - t) / 0.04)
    burst = (0.5 * envelope * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    for onset in onsets:
        i = int(round(onset * sample_rate))
        y[i:i + burst.size] += burst[: max(0, min(burst.size, y.size - i))]
    soundfile.write(str(path), y, sample_rate)
    return path


BEATS = np.arange(0.5, 12.0, 0.5)  # 120 BPM over a 12-s clip


def test_rhythm_and_midi_on_the_beat(tmp_path):
    rhythm = write_rhythm(tmp_path / "clip.rhythm.json", BEATS, 12.0, cuts=[4.0])
    midi = write_midi(tmp_path / "clip.mid", BEATS)
    mode, metrics, labels = evaluate_inputs([load_input(rhythm), load_input(midi)])
    assert mode == "rhythm"
    assert metrics["onset_f1"] == pytest.approx(1.0)
    # the MIDI's tempo map (120 BPM from 0 s: one beat more than the video's, at 0 s) → F = 2·23 / (24 + 23)
    assert metrics["beat_f1"] == pytest.approx(46 / 47) and labels["music_beats"] == ev.BEATS_FROM_TEMPO_MAP
    assert metrics["bhs"] == 1.0 and metrics["cut_hit"] == 1.0
    assert labels["tempo_relation"] == "same"
    assert metrics["scale_consistency"] == 1.0  # C major arpeggio: music statistics come along for MIDI


def test_off_beat_midi_scores_zero_but_same_tempo(tmp_path):
    rhythm = write_rhythm(tmp_path / "clip.rhythm.json", BEATS, 12.0)
    midi = write_midi(tmp_path / "clip.mid", BEATS + 0.25)  # eighth-note off-beats
    _, metrics, labels = evaluate_inputs([load_input(rhythm), load_input(midi)])
    assert metrics["onset_f1"] == 0.0
    assert labels["tempo_relation"] == "same"  # the tempo map is 120 BPM: right tempo, wrong phase
    # and its beats sit on the video's: only the onsets tell that every note is off the beat
    assert metrics["beat_f1"] == pytest.approx(46 / 47)


def test_rhythm_and_wav_with_detected_onsets(tmp_path):
    rhythm = write_rhythm(tmp_path / "clip.rhythm.json", BEATS, 12.0)
    wav = write_clicks(tmp_path / "clip.wav", BEATS, 12.0)
    _, metrics, labels = evaluate_inputs([load_input(rhythm), load_input(wav)])
    assert metrics["onset_f1"] > 0.95
    assert metrics["beat_f1"] > 0.9 and labels["music_beats"] == ev.BEATS_FROM_AUDIO  # the beat tracker finds the clicks
    # extract-rhythm's audio reading (the one tracker for heard beats): one 23 ms hop after the attacks (+24 measured)
    assert 0 <= metrics["beat_offset_ms"] <= 30
    assert "scale_consistency" not in metrics  # audio has no symbolic statistics


@pytest.mark.parametrize("suffix", [".m4a", ".mp3"])
def test_compressed_audio_is_decoded_by_ffmpeg(tmp_path, suffix):
    """Codecs libsndfile can't read go through ffmpeg (no librosa import): the same clicks score as the WAV."""
    import subprocess

    wav = write_clicks(tmp_path / "clip.wav", BEATS, 12.0)
    packed = tmp_path / f"clip{suffix}"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-b:a", "128k", str(packed)], check=True)
    samples = ev.read_audio(packed)
    assert samples.dtype == np.float32 and abs(samples.size / ev.SAMPLE_RATE - 12.0) < 0.1
    rhythm = write_rhythm(tmp_path / "clip.rhythm.json", BEATS, 12.0)
    _, metrics, labels = evaluate_inputs([load_input(rhythm), load_input(packed)])
    assert metrics["beat_f1"] > 0.9 and metrics["onset_f1"] > 0.9 and labels["music_beats"] == ev.BEATS_FROM_AUDIO
    silent_video = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:duration=1", str(silent_video)],
                   check=True)
    with pytest.raises(V2MError, match="no audio stream"):
        ev.read_audio(silent_video)


def test_folder_hears_beats_in_the_render(tmp_path):
    """NAME.mid + NAME.wav in a folder: onsets and statistics from the MIDI, the music's beats tracked in the WAV.
    Here the WAV clicks on the off-beats, so the heard beats miss the video's though the MIDI's notes hit them."""
    folder = tmp_path / "out"
    folder.mkdir()
    write_rhythm(folder / "a.rhythm.json", BEATS, 12.0)
    write_midi(folder / "a.mid", BEATS)
    write_clicks(folder / "a.wav", BEATS + 0.25, 12.0)
    (folder / "a.done.json").write_text('{"version": 1}')  # run's completion marker: bookkeeping, not scored
    result = evaluate_folder(folder)
    assert not result["failures"]
    row = result["rows"][0]
    assert row["labels"]["music_beats"] == ev.BEATS_FROM_AUDIO
    assert row["metrics"]["onset_f1"] == pytest.approx(1.0) and row["metrics"]["scale_consistency"] == 1.0
    assert row["metrics"]["beat_f1"] < 0.1


def test_music_alone_gives_statistics(tmp_path):
    mode, metrics, _ = evaluate_inputs([load_input(write_midi(tmp_path / "a.mid", BEATS))])
    assert mode == "music"
    # 23 notes cycling C4 E4 G4 C5: pitch classes C ×11, E ×6, G ×6
    prob = np.array([11, 6, 6]) / 23
    assert metrics["pitch_class_entropy"] == pytest.approx(float(-(prob * np.log2(prob)).sum()))
    assert metrics["pitch_range"] == 12 and metrics["notes"] == 23


def test_controls_carry_the_beat_grid(tmp_path):
    controls = {"tokenizer_hash": "x", "meter": 4, "tempo_bpm": 120.0, "duration": 12.0, "beat_times": BEATS.tolist(),
                "downbeats": BEATS[::4].tolist(), "bars": [], "rhythm": {"cuts": [], "envelope": [], "frame_rate": 50}}
    path = tmp_path / "clip.controls.json"
    path.write_bytes(dumps(make_artifact("v2m.controls", controls, stage="encode-tokens")))
    midi = write_midi(tmp_path / "clip.mid", BEATS)
    mode, metrics, _ = evaluate_inputs([load_input(path), load_input(midi)])
    assert mode == "rhythm" and metrics["onset_f1"] == pytest.approx(1.0)
    assert "density_accuracy" not in metrics  # no bars requested: nothing to compare


def test_control_accuracy_counts_classes():
    requested = [{"density": 0, "strength": [2, 0, 1, 0]}, {"density": 2, "strength": [2, 1, 1, 1]},
                 {"density": 3, "strength": [2, 0, 0, 0]}]
    measured = [{"density": 0, "strength": [2, 0, 1, 0]}, {"density": 3, "strength": [2, 1, 0, 1]},
                {"density": 1, "strength": [2, 0, 0, 0]}]
    out = ev.control_accuracy(requested, measured)
    assert out["density_accuracy"] == pytest.approx(1 / 3)
    assert out["density_within1"] == pytest.approx(2 / 3)
    assert out["strength_accuracy"] == pytest.approx(11 / 12)


@pytest.mark.parametrize("case", ["two_midis", "model", "report", "rhythm_only", "video"])
def test_mismatched_kinds_are_one_clear_line(tmp_path, case):
    rhythm = write_rhythm(tmp_path / "clip.rhythm.json", BEATS, 12.0)
    midi = write_midi(tmp_path / "a.mid", BEATS)
    if case == "two_midis":
        inputs, expected = [rhythm, midi, write_midi(tmp_path / "b.mid", BEATS)], "2 pieces of music"
    elif case == "model":
        st = tmp_path / "m.safetensors"
        header = b'{"__metadata__":{"format":"v2m.model"}}'
        st.write_bytes(len(header).to_bytes(8, "little") + header)
        inputs, expected = [st, midi], "--model"
    elif case == "report":
        report = tmp_path / "r.json"
        report.write_bytes(dumps(make_artifact("v2m.report", {"mode": "music", "metrics": {}}, stage="evaluate")))
        inputs, expected = [report, midi], "evaluate's output"
    elif case == "rhythm_only":
        inputs, expected = [rhythm], "no music"
    else:
        video = tmp_path / "clip.mp4"
        video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
        inputs, expected = [video], "extract-rhythm"
    with pytest.raises(V2MError) as info:
        evaluate_inputs([load_input(p) for p in inputs])
    assert expected in info.value.one_line() and "\n" not in info.value.one_line()
    if case == "video":  # and how to score its soundtrack instead (ffmpeg's m4a is read: see the test above)
        assert f"ffmpeg -i {tmp_path / 'clip.mp4'} -vn clip.m4a" in info.value.one_line()


def test_empty_music_is_refused(tmp_path):
    empty = write_midi(tmp_path / "empty.mid", [])
    with pytest.raises(V2MError, match="empty"):
        load_input(empty)
    silent = tmp_path / "silent.wav"
    soundfile.write(str(silent), np.zeros(22050, dtype=np.float32), 22050)
    with pytest.raises(V2MError, match="empty"):
        load_input(silent)


def make_run_folder(folder, broken=True):
    """A `v2m run`-style folder: two good pieces (on the beat, half on it) and, optionally, one broken MIDI."""
    folder.mkdir(exist_ok=True)
    write_rhythm(folder / "a.rhythm.json", BEATS, 12.0)
    write_midi(folder / "a.mid", BEATS)
    write_rhythm(folder / "b.rhythm.json", BEATS, 12.0)
    write_midi(folder / "b.mid", BEATS[::2])  # half tempo: F = 2/3
    (folder / "b.mp4").write_bytes(b"not evaluated")
    if broken:
        write_rhythm(folder / "c.rhythm.json", BEATS, 12.0)
        (folder / "c.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    return folder


def test_folder_rows_summary_and_failures(tmp_path):
    result = evaluate_folder(make_run_folder(tmp_path / "out"))
    assert [row["name"] for row in result["rows"]] == ["a", "b"]
    assert [f["name"] for f in result["failures"]] == ["c"]
    f1 = [row["metrics"]["onset_f1"] for row in result["rows"]]
    assert f1 == pytest.approx([1.0, 2 * 1 * 0.5217 / 1.5217], abs=0.01)
    assert result["summary"]["mean"]["onset_f1"] == pytest.approx(np.mean(f1))
    assert result["summary"]["median"]["onset_f1"] == pytest.approx(np.median(f1))
    assert result["summary"]["worst"]["onset_f1"] == pytest.approx(min(f1))
    assert result["metrics"]["failed"] == 1.0


def test_gates_parse_apply_and_fail():
    gates = gates_module.parse_gates("beat_f1<0.8, bhs.worst<=0.5,nll_delta>0.01")
    assert [(g.metric, g.statistic, g.op, g.threshold) for g in gates] == [
        ("beat_f1", None, "<", 0.8), ("bhs", "worst", "<=", 0.5), ("nll_delta", None, ">", 0.01)]
    results = gates_module.apply_gates(gates[:1], {"beat_f1": 0.9})
    assert not results[0]["failed"]
    gates_module.raise_if_failed(results)
    results = gates_module.apply_gates(gates[:1], {"beat_f1": 0.7})
    with pytest.raises(GateFailed, match="beat_f1<0.8") as info:
        gates_module.raise_if_failed(results)
    assert info.value.exit_code == 3
    # not measured or NaN: the gate fails rather than passing blind
    assert gates_module.apply_gates(gates[:1], {})[0]["failed"]
    assert gates_module.apply_gates(gates[:1], {"beat_f1": float("nan")})[0]["failed"]


def test_unknown_gate_metric_lists_known_names():
    with pytest.raises(V2MError) as info:
        gates_module.parse_gates("beat_f2<0.8")
    line = info.value.one_line()
    assert "unknown metric 'beat_f2'" in line and "beat_f1" in line and "onset_f1" in line and "nll_delta" in line
    # a name from before the beat/onset split says what it is called now
    with pytest.raises(V2MError, match="'grid_beat_f1' was renamed.*now beat_f1"):
        gates_module.parse_gates("grid_beat_f1<0.8")


def test_plot_writes_a_png(tmp_path):
    from v2m.stages.evaluate.plot import plot_rhythm

    reference = ev.reference_from_rhythm(rhythm_artifact(BEATS, 12.0, cuts=[4.0])["data"])
    music = ev.music_from_score(make_score(BEATS + 0.02))
    out = tmp_path / "plot.png"
    plot_rhythm(out, reference, music, {"beat_f1": 1.0, "bhs": 1.0})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*part*"))  # written atomically, no leftovers


def test_report_metrics_are_json_clean():
    cleaned = ev.clean({"a": float("nan"), "b": 1, "c": float("inf")})
    assert cleaned == {"a": None, "b": 1.0, "c": None}
    json.dumps(cleaned, allow_nan=False)


def tiny_vocab():
    """A real v2m Vocab (MidiTok REMI + controls) with hand-set class boundaries, so no shipped tokenizer is needed."""
    from v2m.stages.tokens.controls import PEAK_PICKING, TEMPO_BOUNDS_BPM
    from v2m.stages.tokens.vocab import new_vocab

    stats = {"density_bounds": [0.5, 1.0, 1.5, 2.5], "n_density": 6, "strong_min": 2,
             "tempo_bounds_bpm": list(TEMPO_BOUNDS_BPM), "mode_brightness_min": 0.4, "peak_picking": dict(PEAK_PICKING),
             "strength_shares": [0.3, 0.4, 0.3]}
    return new_vocab(stats)


def test_tokens_with_requested_controls(tmp_path):
    """Tokens decode onto their beat grid; controls requested = the music's own → accuracy 1; one bar off by one → (n-1)/n."""
    from v2m.stages.tokens.controls import controls_from_score
    from v2m.stages.tokens.convert import encode_score

    vocab = tiny_vocab()
    score = make_score(BEATS)
    grid = np.arange(0.0, 12.01, 0.5)
    requested = controls_from_score(score, vocab)["bars"]
    requested[0] = dict(requested[0], density=requested[0]["density"] + 1)
    data = {"tokenizer_hash": vocab.hash, "ids": encode_score(score, vocab), "meter": 4, "beat_times": grid.tolist(),
            "downbeats": grid[::4].tolist(), "controls": {"bars": requested}}
    tokens = tmp_path / "clip.tokens.json"
    tokens.write_bytes(dumps(make_artifact("v2m.tokens", data, stage="generate")))
    rhythm = write_rhythm(tmp_path / "clip.rhythm.json", BEATS, 12.0)
    tokenizer = vocab.to_json()
    mode, metrics, _ = evaluate_inputs([load_input(rhythm, tokenizer), load_input(tokens, tokenizer)], tokenizer)
    assert mode == "rhythm" and metrics["onset_f1"] == pytest.approx(1.0)
    n = len(requested)
    assert metrics["bars_compared"] == n
    assert metrics["density_accuracy"] == pytest.approx((n - 1) / n) and metrics["density_within1"] == 1.0
    assert metrics["strength_accuracy"] == 1.0
    # when the controls cannot be measured (here: the default tokenizer is not the one used), the rhythm scores
    # stay and a label says why; a gate on density_accuracy would then fail as "not measured"
    rhythm_only = ev.evaluate_pair(load_input(rhythm).value, load_input(tokens, tokenizer).value,
                                   tokenizer={"format": "not a tokenizer"})
    assert rhythm_only[0]["onset_f1"] == pytest.approx(1.0) and "density_accuracy" not in rhythm_only[0]
    assert rhythm_only[1]["control_accuracy"].startswith("not measured")
    # a tokens artifact from another tokenizer: one clear line
    data["tokenizer_hash"] = "0" * 64
    tokens.write_bytes(dumps(make_artifact("v2m.tokens", data, stage="generate")))
    with pytest.raises(V2MError, match="another tokenizer"):
        load_input(tokens, tokenizer)


def test_control_accuracy_pairs_bars_by_start_time_not_index():
    """A lead-in bar in the music (or a bar it lacks) shifts nothing: bars are paired by their start times."""
    requested = [{"start": 2.0, "density": 1, "strength": [2, 0, 1, 0]}, {"start": 4.0, "density": 2,
                                                                          "strength": [2, 1, 1, 1]},
                 {"start": 6.0, "density": 3, "strength": [2, 0, 0, 0]}]
    measured = [{"start_s": 0.0, "density": 0, "strength": [0, 0, 0, 0]}]  # the lead-in, before any request
    measured += [dict(bar, start_s=bar["start"] + 0.02) for bar in requested]
    out = ev.control_accuracy(requested, measured)
    assert out["bars_compared"] == 3 and out["density_accuracy"] == 1.0 and out["strength_accuracy"] == 1.0
    by_index = ev.control_accuracy([{k: v for k, v in b.items() if k != "start"} for b in requested], measured)
    assert by_index["density_accuracy"] == 0.0  # what pairing by index reported: one bar off


def test_scene_beat_f1_and_cuts_on_beat(tmp_path):
    """A rhythm with two scenes: the music on the first scene's beats only scores 1 there and 0 in the second;
    a cut on a music beat counts, one 60 ms away does not (±35 ms)."""
    first = np.arange(0.0, 6.0, 0.5)
    second = 6.0 + np.arange(0.0, 6.0, 0.4)
    reference = ev.Reference(beats=np.r_[first, second], duration=12.0, bpm=120.0, cuts=np.array([3.0, 6.06]),
                             scenes=[{"start": 0.0, "end": 6.0}, {"start": 6.0, "end": 12.0}], planned=0.5)
    music_beats = np.r_[first, 6.0 + np.arange(0.0, 6.0, 0.55) + 0.2]
    music = ev.Music("audio", onsets=music_beats, beats=music_beats, bpm=120.0, duration=12.0)
    metrics, labels = ev.evaluate_pair(reference, music)
    assert metrics["scenes"] == 2 and metrics["scene_beat_f1_worst"] < 0.4 and metrics["scene_beat_f1"] < 0.7
    assert metrics["cut_on_beat"] == 0.5  # 3.0 is on a beat; 6.06 is 60 ms from the nearest
    assert "planned on the cuts for 50 %" in labels["video_grid"]  # it says the grid was a guess


def test_report_carries_structure_metrics_and_their_corpus_range(tmp_path):
    """A music report has the melody's structure beside the corpus range; with controls the phrases are theirs."""
    from v2m.stages.evaluate.modes import evaluate_request
    from v2m.stages.evaluate.structure import PHRASES_FROM_CONTROLS, PHRASES_FROM_MUSIC, STRUCTURE_METRICS

    # 24 notes cycling C4 E4 G4 C5 on the beats (120 qpm): 6 bars, each the first one again
    midi = write_midi(tmp_path / "loop.mid", np.arange(0.0, 12.0, 0.5), duration_beats=1.0)  # legato: no breaths
    data = evaluate_request([str(midi)]).data
    assert data["mode"] == "music" and set(STRUCTURE_METRICS) <= set(data["metrics"])
    assert data["metrics"]["melody_bars"] == 6 and data["metrics"]["bar_repeat_exact"] == pytest.approx(5 / 6)
    assert data["metrics"]["melody_notes_per_beat"] == pytest.approx(1.0)
    assert data["labels"]["phrase_source"] == PHRASES_FROM_MUSIC
    assert {"bar_repeated_or_varied", "motif_recurrence", "phrase_start_rest"} <= set(data["corpus_range"])
    assert "beat_f1" not in data["corpus_range"]  # ranges only where the corpus has one
    # with a video's controls: phrases from their flags (a cut at bar 1, 2 s at 120 qpm), rhythm mode
    controls = {"tokenizer_hash": "x", "meter": 4, "tempo_bpm": 120.0, "duration": 12.0, "beat_times": BEATS.tolist(),
                "downbeats": BEATS[::4].tolist(), "rhythm": {"cuts": [2.0], "envelope": [], "frame_rate": 50},
                "bars": [{"start": 2.0 * i, "phrase": i in (0, 1), "density": 2, "strength": [1] * 4}
                         for i in range(6)]}
    path = tmp_path / "loop.controls.json"
    path.write_bytes(dumps(make_artifact("v2m.controls", controls, stage="encode-tokens")))
    data = evaluate_request([str(path), str(midi)]).data
    assert data["mode"] == "rhythm" and data["labels"]["phrase_source"] == PHRASES_FROM_CONTROLS
    assert data["metrics"]["phrase_start_rest"] == 0.0  # the loop never rests before bar 1
    assert data["corpus_range"]["bar_repeat_exact"]["p10"] <= data["corpus_range"]["bar_repeat_exact"]["p90"]
