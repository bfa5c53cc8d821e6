"""`v2m evaluate` through the CLI entry point: report on stdout, table on stderr, gates → exit 3, bad input → one line."""

import json

from tests.stages.evaluate.test_model_metrics import write_corpus, write_model
from tests.stages.evaluate.test_report import BEATS, make_run_folder, write_midi, write_rhythm
from v2m.cli.main import main


def pair(tmp_path, shift=0.0):
    rhythm = write_rhythm(tmp_path / "clip.rhythm.json", BEATS, 12.0, cuts=[4.0])
    midi = write_midi(tmp_path / "clip.mid", BEATS + shift)
    return str(rhythm), str(midi)


def test_fail_if_passes_then_fails(tmp_path, capsys):
    rhythm, midi = pair(tmp_path)
    assert main(["evaluate", rhythm, midi, "--fail-if", "onset_f1<0.8,bhs<0.9"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["format"] == "v2m.report" and report["data"]["mode"] == "rhythm"
    assert report["data"]["metrics"]["onset_f1"] == 1.0
    assert report["data"]["labels"]["music_beats"] == "tempo map"  # where beat_f1's music beats came from
    assert [g["failed"] for g in report["data"]["gates"]] == [False, False]
    assert "onset_f1" in captured.err and "passed" in captured.err  # the table and the verdicts go to stderr

    (tmp_path / "off").mkdir()
    off_rhythm, off_midi = pair(tmp_path / "off", shift=0.25)  # every note on the off-beat
    assert main(["evaluate", off_rhythm, off_midi, "--fail-if", "onset_f1<0.8,bhs<0.9,beat_f1<0.8"]) == 3
    captured = capsys.readouterr()
    gates = json.loads(captured.out)["data"]["gates"]  # the report is still complete
    # the MIDI's tempo map still sits on the video's beats: beat_f1 passes, only the onsets show the notes are off
    assert [g["failed"] for g in gates] == [True, False, False]
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("v2m: error: gate failed: onset_f1<0.8 (onset_f1 = 0)")
    assert "bhs<0.9" not in last  # bhs is 1.0 (1-second bins forgive the off-beats): only the failed gate is named


def test_json_writes_plain_metrics_to_output(tmp_path, capsys):
    rhythm, midi = pair(tmp_path)
    out = tmp_path / "metrics.json"
    assert main(["evaluate", rhythm, midi, "--json", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    data = json.loads(out.read_text())
    assert "format" not in data and data["mode"] == "rhythm" and data["labels"]["tempo_relation"] == "same"
    # an existing output is not overwritten without --force
    assert main(["evaluate", rhythm, midi, "--json", "-o", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_plot_option_writes_png(tmp_path, capsys):
    rhythm, midi = pair(tmp_path)
    png = tmp_path / "clip.png"
    assert main(["evaluate", rhythm, midi, "--plot", str(png), "-o", str(tmp_path / "r.json")]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_unknown_gate_metric_is_one_line_with_known_names(tmp_path, capsys):
    rhythm, midi = pair(tmp_path)
    assert main(["evaluate", rhythm, midi, "--fail-if", "beat_fscore<0.8"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "unknown metric 'beat_fscore'" in lines[0] and "known metrics:" in lines[0]
    assert "beat_f1" in lines[0] and "nll_delta" in lines[0]


def test_folder_report_rows_and_failure_exit(tmp_path, capsys):
    folder = make_run_folder(tmp_path / "out")
    report = tmp_path / "report.json"
    assert main(["evaluate", str(folder), "-o", str(report), "--fail-if", "onset_f1.worst<0.5"]) == 1
    err = capsys.readouterr().err
    assert "1 of 3 items failed (c:" in err
    data = json.loads(report.read_text())["data"]
    assert data["mode"] == "folder" and [r["name"] for r in data["rows"]] == ["a", "b"]
    assert data["summary"]["worst"]["onset_f1"] < 0.7 and data["gates"][0]["failed"] is False


def test_mismatched_kinds_and_empty_music(tmp_path, capsys):
    rhythm, midi = pair(tmp_path)
    assert main(["evaluate", rhythm, rhythm]) == 1
    assert "2 rhythm artifacts given" in capsys.readouterr().err
    empty = write_midi(tmp_path / "empty.mid", [])
    assert main(["evaluate", rhythm, str(empty)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0]


def test_model_mode_gate_and_tokenizer_mismatch(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", tokenizer_hash="tok-a")
    model = write_model(tmp_path / "m.safetensors", tokenizer_hash="tok-a", seed=1)
    args = ["evaluate", "--model", str(model), "--corpus", str(corpus), "--reference", str(model), "--no-speed",
            "--max-tokens", "256", "--context", "64"]
    assert main(args + ["--fail-if", "nll_delta>0.01,kl>0.001"]) == 0
    data = json.loads(capsys.readouterr().out)["data"]
    assert data["mode"] == "model" and data["metrics"]["kl"] < 1e-6 and data["metrics"]["params"] > 0

    other = write_model(tmp_path / "other.safetensors", tokenizer_hash="tok-b")
    assert main(["evaluate", "--model", str(other), "--corpus", str(corpus), "--no-speed"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "different tokenizers" in captured.err


def test_rhythm_from_stdin_pipeline(tmp_path):
    """`... | v2m evaluate - clip.mid`: a real pipe between two processes, stdout and stderr apart."""
    import subprocess
    import sys

    rhythm, midi = pair(tmp_path)
    code = "import sys; from v2m.cli.main import main; sys.exit(main(sys.argv[1:]))"
    with open(rhythm, "rb") as stdin:
        proc = subprocess.run([sys.executable, "-c", code, "evaluate", "-", midi, "--json"], stdin=stdin,
                              capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["metrics"]["onset_f1"] == 1.0
    assert b"onset_f1" in proc.stderr  # the table
