"""`v2m train` through the CLI entry: a model on disk, nothing on stdout, one-line errors with exit 1."""

import pytest

from tests.models.corpus import make_corpus
from v2m.cli.main import main
from v2m.models.loading import load_model


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_writes_model_and_logs_to_stderr_only(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "c")
    out = tmp_path / "m.safetensors"
    code = main(["train", str(corpus), "-o", str(out), "--preset", "debug", "--steps", "12", "--eval-every", "6",
                 "--save-dtype", "bfloat16"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""
    assert "step 12/12" in captured.err and "val" in captured.err and "tok/s" in captured.err
    loaded = load_model(out)
    assert loaded.meta["training"]["steps"] == 12 and loaded.meta["training"]["preset"] == "debug"
    # existing output: refused before any work
    assert main(["train", str(corpus), "-o", str(out), "--preset", "debug"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--resume", "missing.ckpt.safetensors"], "no such file"),
    (["--preset", "giant"], "unknown model preset 'giant'"),
    (["--device", "tpu"], "unknown device"),
])
def test_bad_options_are_one_line(tmp_path, capsys, args, message):
    corpus = make_corpus(tmp_path / "c")
    code = main(["train", str(corpus), "-o", str(tmp_path / "m.safetensors"), *args])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_not_a_corpus(tmp_path, capsys):
    song = tmp_path / "song.mid"
    song.write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60")
    assert main(["train", str(song), "-o", str(tmp_path / "m.safetensors")]) == 1
    assert "expected a v2m.corpus artifact, found a MIDI file" in capsys.readouterr().err
