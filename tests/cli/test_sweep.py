"""`v2m sweep` on a debug model and a tiny corpus: a passing run, a planted failing gate (exit 3, named in the
Markdown and the JUnit XML), a corpus without a test split, bad sweep files, and the example script."""

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.models.corpus import make_corpus
from tests.quant.helpers import saved_tiny_model
from v2m.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SWEEP = """
max_tokens = 256
speed = false
[defaults]
group = 32
calib_samples = 4
calib_length = 64
[[row]]
name = "w8a8-smoothquant"
scheme = "w8a8"
method = "smoothquant"
gates = ["nll_delta>0.05", "kl>0.01"]
[[row]]
name = "w2-decoupleq"
scheme = "w2"
method = "decoupleq"
rounds = 2
gates = "nll_delta>0.5"
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    model, corpus = saved_tiny_model(folder)
    return folder, model, corpus


def sweep(capsys, folder, text, *args):
    path = folder / "sweep.toml"
    path.write_text(text)
    code = main(["sweep", str(path), *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def junit_cases(path):
    root = ElementTree.parse(path).getroot()
    return {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}


def test_sweep_passes_then_fails_on_a_planted_gate(files, capsys, tmp_path):
    folder, model, corpus = files
    out = tmp_path / "out"
    code, stdout, err = sweep(capsys, tmp_path, SWEEP, "--model", model, "--corpus", corpus, "-o", out,
                              "--junit", out / "junit.xml")
    assert code == 0, err
    assert stdout == ""  # the table and progress go to stderr, the files to OUT
    assert "[1/2] w8a8-smoothquant" in err and "[2/2] w2-decoupleq" in err
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "v2m.report" and report["data"]["mode"] == "sweep"
    rows = {r["name"]: r for r in report["data"]["rows"]}
    assert set(rows) == {"w8a8-smoothquant", "w2-decoupleq"}
    assert rows["w2-decoupleq"]["labels"]["group"] == "w2 g32 float-zero"
    assert 0 < rows["w2-decoupleq"]["metrics"]["size_ratio"] < rows["w8a8-smoothquant"]["metrics"]["size_ratio"] < 1
    table = (out / "summary.md").read_text()
    assert "| w8a8-smoothquant | w8a8 per-channel | smoothquant+rtn |" in table and "**2 of 2 rows passed**" in table
    assert "❌" not in table
    cases = junit_cases(out / "junit.xml")
    assert set(cases) == {("sweep.w8a8-smoothquant", "nll_delta>0.05"), ("sweep.w8a8-smoothquant", "kl>0.01"),
                          ("sweep.w2-decoupleq", "nll_delta>0.5")}
    assert all(c.find("failure") is None for c in cases.values())

    # a planted failing gate: kl > -1 always holds, so the gate fails; only that row runs (--rows)
    planted = SWEEP.replace('gates = "nll_delta>0.5"', 'gates = ["nll_delta>0.5", "kl>-1"]')
    code, _, err = sweep(capsys, tmp_path, planted, "--model", model, "--corpus", corpus, "-o", out, "--force",
                         "--junit", out / "junit.xml", "--rows", "w2-decoupleq")
    assert code == 3
    assert "gate failed: w2-decoupleq: kl>-1" in err.splitlines()[-1]
    table = (out / "summary.md").read_text()
    assert "❌ **kl>-1** (kl = " in table and "✅ nll_delta>0.5" in table
    assert "**0 of 1 rows passed**; failed gates: `w2-decoupleq: kl>-1`" in table
    cases = junit_cases(out / "junit.xml")
    assert set(cases) == {("sweep.w2-decoupleq", "nll_delta>0.5"), ("sweep.w2-decoupleq", "kl>-1")}
    failure = cases[("sweep.w2-decoupleq", "kl>-1")].find("failure")
    assert failure is not None and "kl>-1" in failure.get("message")
    assert cases[("sweep.w2-decoupleq", "nll_delta>0.5")].find("failure") is None


def test_a_corpus_without_test_pieces_scores_held_out_train_pieces(files, capsys, tmp_path):
    folder, model, _ = files
    corpus = make_corpus(tmp_path / "mine", pieces=(10, 0, 0))  # a few of the user's own files: no val/test
    one_row = SWEEP.split("[[row]]")[0] + '[[row]]\nname = "w4-rtn"\nscheme = "w4"\nmethod = "rtn"\ngates = "nll_delta>0.5"\n'
    code, _, err = sweep(capsys, tmp_path, one_row, "--model", model, "--corpus", corpus, "-o", tmp_path / "a")
    assert code == 0, err
    assert "scoring a held-out 20% of the 'train' pieces" in err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["data"]["labels"]["scored"].startswith("train: 2 held-out sequences of 10")
    # calibration saw the other 8 pieces only (recorded in the checkpoint)
    from v2m.checkpoint import read_meta

    assert read_meta(tmp_path / "a" / "w4-rtn.safetensors")["quant"] is not None
    code, _, err = sweep(capsys, tmp_path, one_row, "--model", model, "--corpus", corpus, "-o", tmp_path / "b",
                         "--split", "test")
    assert code == 1 and "the 'test' split is empty" in err and "--split auto" in err


@pytest.mark.parametrize("text,message", [
    ('[[row]]\nscheme = "w4"\nmethd = "rtn"\n', "row 1: unknown key 'methd'"),
    ('[[row]]\nscheme = "w5"\n', "unknown scheme 'w5'. v2m quantize --list"),
    ('[[row]]\nscheme = "w4"\nmethod = "gptq+rtn"\n', "rtn and gptq are alternatives"),
    ('[[row]]\nscheme = "w4"\nmethod = "smoothquant"\n', "v2m quantize --list"),
    ('[[row]]\nscheme = "w4"\ngates = "nll<<1"\n', "cannot read 'nll<<1'"),
    ('[[row]]\nscheme = "w4"\ngroup = "64"\n', "'group' must be an integer"),
    ('spilt = "test"\n[[row]]\nscheme = "w4"\n', "unknown key 'spilt'"),
    ('[[row]]\nname = "a"\n[[row]]\nname = "a"\n', "used twice"),
    ("split = \n", "not a readable TOML"),
])
def test_bad_sweep_files_are_one_line(files, capsys, tmp_path, text, message):
    folder, model, corpus = files
    code, _, err = sweep(capsys, tmp_path, text, "--model", model, "--corpus", corpus, "-o", tmp_path / "o")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "o").exists()


def test_example_sweep_file_is_valid_and_the_script_calls_sweep(files, tmp_path):
    from v2m.stages.sweep import read_sweep

    rows = read_sweep(str(EXAMPLES / "sweep.toml")).rows
    assert len(rows) >= 5 and all(row.gates for row in rows)
    folder, model, corpus = files
    # the script is a thin call of `v2m sweep`: with a small sweep file, its exit status and table are the sweep's
    small = tmp_path / "small.toml"
    small.write_text(SWEEP.replace('gates = "nll_delta>0.5"', 'gates = "kl>-1"').split('[[row]]\nname = "w8a8')[0]
                     + '[[row]]\nname = "w8-rtn"\nscheme = "w8"\nmethod = "rtn"\ngroup = 0\ngates = "kl>-1"\n')
    bindir = Path(sys.executable).parent
    env = {**os.environ, "V2M": str(bindir / "v2m"), "SWEEP": str(small)}
    run = subprocess.run(["bash", str(EXAMPLES / "quantize_and_eval.sh"), str(model), str(corpus), str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 3, run.stderr[-2000:]
    assert "| w8-rtn | w8 per-channel | rtn |" in run.stdout and "❌ **kl>-1**" in run.stdout
    assert (tmp_path / "out" / "junit.xml").is_file()
