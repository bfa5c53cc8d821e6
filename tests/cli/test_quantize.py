"""`v2m quantize` end to end: the file it writes, and one clear line for each bad input."""

import json

import pytest
from safetensors import safe_open

from tests.models.corpus import make_corpus
from tests.quant.helpers import saved_tiny_model
from v2m.cli.main import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_quant")
    model, corpus = saved_tiny_model(folder)
    return folder, model, corpus


def run(capsys, *args):
    code = main(["quantize", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str, pattern: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("v2m: error:") and pattern in lines[0], err


def test_quantize_writes_a_packed_model_and_logs_to_stderr(files, capsys, tmp_path):
    folder, model, corpus = files
    out = tmp_path / "q.safetensors"
    code, stdout, err = run(capsys, model, "-o", out, "--scheme", "w8a8", "--method", "smoothquant",
                            "--calib", corpus, "--calib-samples", 4, "--alpha", 0.6)
    assert code == 0 and stdout == ""
    assert "smoothquant α=0.6" in err and "bf16 model" in err
    with safe_open(str(out), "pt") as f:
        quant = json.loads(f.metadata()["quant"])
    assert quant["method"] == "smoothquant+rtn" and quant["hyperparameters"]["alpha"] == 0.6
    assert quant["calibration"]["samples"] == 4 and len(quant["calibration"]["sha256"]) == 64

    code, _, err = run(capsys, model, "-o", out, "--scheme", "w8", "--method", "rtn")
    assert code == 1
    one_line_error(err, "already exists")

    code, _, err = run(capsys, out, "-o", tmp_path / "again.safetensors", "--scheme", "w4", "--group", "32")
    assert code == 1
    one_line_error(err, "is already quantized (w8a8, smoothquant+rtn)")


def test_bad_inputs_are_one_line_each(files, capsys, tmp_path):
    folder, model, corpus = files
    other = make_corpus(tmp_path / "other", pieces=(4, 1, 1), name="another-tokenizer")
    out = tmp_path / "q.safetensors"
    cases = [
        (["--scheme", "w4", "--group", "32", "--method", "gptq", "--calib", other], "comes from another tokenizer"),
        (["--scheme", "w4", "--group", "48"], "group size 48 does not divide layer blocks.0.attn.qkv (in_features 64)"),
        (["--scheme", "w4", "--method", "gptq", "--group", "32"], "needs calibration data"),
        (["--scheme", "w4", "--group", "32", "--method", "smoothquant", "--calib", corpus], "keeps activations in float"),
        (["--scheme", "w5"], "unknown scheme 'w5'"),
        (["--scheme", "w4", "--method", "fast"], "unknown method 'fast'"),
    ]
    for args, message in cases:
        code, stdout, err = run(capsys, model, "-o", out, *args)
        assert code == 1 and stdout == "", args
        one_line_error(err, message)
    assert not out.exists()


def test_kernel_that_cannot_run_the_scheme(files, capsys, tmp_path):
    folder, model, corpus = files
    out = tmp_path / "w4.safetensors"
    assert run(capsys, model, "-o", out, "--scheme", "w4", "--group", "32")[0] == 0
    code = main(["evaluate", "--model", str(out), "--corpus", str(corpus), "--kernel", "cpu-int8", "--no-speed"])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    one_line_error(captured.err, "kernel 'cpu-int8' cannot run layer blocks.0.attn.qkv (w4 g32): it runs w8a8")


def test_list_prints_the_table_without_a_model(capsys):
    code, stdout, err = run(capsys, "--list")
    assert code == 0 and stdout == ""
    assert "methods × schemes" in err and "kernels × schemes" in err
    assert "decoupleq" in err and "cpu-lowbit" in err and "mixed+gptq" in err


def test_refusals_point_at_the_list(files, capsys, tmp_path):
    folder, model, corpus = files
    code, _, err = run(capsys, model, "-o", tmp_path / "x.safetensors", "--scheme", "fp8", "--method", "decoupleq",
                       "--calib", corpus)
    one_line_error(err, "v2m quantize --list")
    code, _, err = run(capsys, model, "-o", tmp_path / "x.safetensors", "--scheme", "w4", "--method", "magic")
    one_line_error(err, "v2m quantize --list")
