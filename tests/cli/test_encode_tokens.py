"""`v2m encode-tokens`: MIDI → tokens, rhythm → controls, folder → corpus; bad input is one clear line."""

import json

import pytest

from tests.music import empty_midi, malformed_midi, midi_bytes, song
from tests.stages.tokens.test_controls import rhythm
from tests.stages.tokens.test_vocab import small_vocab
from v2m import artifacts
from v2m.cli.main import main
from v2m.stages.tokens.convert import encode_score


@pytest.fixture()
def tokenizer(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(small_vocab().to_json()))
    return path


def run(capsys, *args):
    code = main(["encode-tokens", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_midi_to_tokens_on_stdout(tmp_path, capsys, tokenizer):
    song_path = tmp_path / "song.mid"
    song_path.write_bytes(midi_bytes(song()[0]))
    code, out, err = run(capsys, song_path, "--tokenizer", tokenizer)
    assert code == 0, err
    obj = artifacts.parse_artifact(out.encode(), "stdout", "v2m.tokens")
    data = obj["data"]
    vocab = small_vocab()
    assert data["tokenizer_hash"] == vocab.hash and data["ids"] == encode_score(song()[0], vocab)
    assert data["meter"] == 4 and data["downbeats"][:4] == [0.0, 2.0, 4.0, 6.0]
    assert obj["source"]["sha256"] == artifacts.sha256_bytes(song_path.read_bytes())
    # same input, same bytes
    assert run(capsys, song_path, "--tokenizer", tokenizer)[1] == out


def test_rhythm_to_controls_via_stdin_and_file(tmp_path, capsys, monkeypatch, tokenizer):
    import io
    import sys

    payload = artifacts.dumps(artifacts.make_artifact("v2m.rhythm", rhythm(), stage="extract-rhythm"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
    out_path = tmp_path / "controls.json"
    code, out, err = run(capsys, "-", "-o", out_path, "--tokenizer", tokenizer)
    assert code == 0 and out == "", err
    controls = artifacts.read_artifact(out_path, "v2m.controls")["data"]
    assert len(controls["bars"]) == 4 and controls["tokenizer_hash"] == small_vocab().hash
    code, out, err = run(capsys, "-", "-o", out_path, "--tokenizer", tokenizer)
    assert code == 1 and "already exists" in err and "--force" in err


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01 not midi at all", "expected a MIDI file or a v2m.rhythm artifact, found a file that is not a v2m artifact"),
    (empty_midi(), "the MIDI file has no notes"),
    (malformed_midi(), "not a readable MIDI file"),
    (b"MThd\x00\x00\x00\x06\x00\x02\x00\x01\x01\xe0", "type-2 MIDI file"),
    (b'{"format": "v2m.tokens", "version": 1, "data": {}}', "expected a v2m.rhythm artifact, found a v2m.tokens artifact"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, tokenizer, content, message):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(content)
    code, out, err = run(capsys, bad, "-o", tmp_path / "out.json", "--tokenizer", tokenizer)
    assert code == 1 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists()


def test_folder_to_corpus_and_refusals(tmp_path, capsys, tokenizer):
    folder = tmp_path / "midis"
    folder.mkdir()
    for i, per_beat in enumerate([(1, 2, 1, 2), (2, 4, 2, 1), (4, 4, 4, 4)]):
        (folder / f"s{i}.mid").write_bytes(midi_bytes(song(notes_per_beat=per_beat)[0]))
    out = tmp_path / "corpus"
    code, stdout, err = run(capsys, folder, "-o", out, "--tokenizer", tokenizer, "--jobs", 1)
    assert code == 0 and stdout == "", err
    index = artifacts.read_artifact(out / "index.json", "v2m.corpus")["data"]
    assert sum(s["pieces"] for s in index["splits"].values()) == 3 and index["tokenizer_hash"] == small_vocab().hash
    code, _, err = run(capsys, folder, "-o", out, "--tokenizer", tokenizer)
    assert code == 1 and "already holds a corpus" in err
    code, _, err = run(capsys, folder, "--tokenizer", tokenizer)
    assert code == 1 and "pass -o DIR/" in err
    code, _, err = run(capsys, "--source", "bach", "-o", tmp_path / "c2")
    assert code == 1 and "unknown --source 'bach'" in err


def test_foreign_tokenizer_file_is_a_clear_error(tmp_path, capsys):
    song_path = tmp_path / "song.mid"
    song_path.write_bytes(midi_bytes(song()[0]))
    code, out, err = run(capsys, song_path, "--tokenizer", tmp_path / "nope.json")
    assert code == 1 and out == "" and "no such file" in err
