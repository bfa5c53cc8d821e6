"""The artifact contract: headers, sniffing, version checks, atomic and non-clobbering writes."""

import json
import os

import pytest

from v2m import artifacts
from v2m.errors import V2MError


def test_make_and_parse_round_trip(tmp_path):
    data = {"kind": "video", "duration": 2.0, "frame_rate": 10.0, "beats": [0.5, 1.0], "meter": 2, "downbeats": [0.5]}
    art = artifacts.make_artifact("v2m.rhythm", data, stage="extract-rhythm",
                                  config={"method": "flow"}, seed=None, source={"name": "a.mp4", "sha256": "0" * 64})
    path = tmp_path / "r.json"
    artifacts.write_artifact(art, path)
    back = artifacts.read_artifact(path, "v2m.rhythm")
    assert back == art
    assert back["created_by"]["stage"] == "extract-rhythm"


def test_dumps_is_deterministic():
    art = artifacts.make_artifact("v2m.tokens", {"ids": [1, 2, 3]}, stage="generate", seed=7)
    assert artifacts.dumps(art) == artifacts.dumps(json.loads(artifacts.dumps(art)))


@pytest.mark.parametrize("head,kind", [
    (b"", "empty"), (b"MThd\x00\x00\x00\x06", "midi"), (b'  {"format": 1}', "json"),
    ((10).to_bytes(8, "little") + b'{"a":"bb"}', "safetensors"), (b"RIFF....WAVE", "riff"),
    (b"\x00\x00\x00\x18ftypmp42", "other"),
])
def test_sniff(head, kind):
    assert artifacts.sniff(head) == kind


def test_wrong_kind_names_what_was_found_and_the_maker(tmp_path):
    path = tmp_path / "t.json"
    artifacts.write_artifact(artifacts.make_artifact("v2m.tokens", {"ids": []}, stage="x"), path)
    with pytest.raises(V2MError) as err:
        artifacts.read_artifact(path, "v2m.rhythm")
    line = err.value.one_line()
    assert "expected a v2m.rhythm artifact" in line and "found a v2m.tokens artifact" in line
    assert "v2m extract-rhythm" in line


def test_midi_where_artifact_expected(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0")
    with pytest.raises(V2MError, match="found a MIDI file"):
        artifacts.read_artifact(path, "v2m.controls")


def test_unsupported_version(tmp_path):
    art = artifacts.make_artifact("v2m.rhythm", {}, stage="x")
    art["version"] = 99
    path = tmp_path / "r.json"
    path.write_bytes(artifacts.dumps(art))
    with pytest.raises(V2MError, match="version 99 is not supported"):
        artifacts.read_artifact(path, "v2m.rhythm")


def test_truncated_json(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(artifacts.dumps(artifacts.make_artifact("v2m.rhythm", {"a": 1}, stage="x"))[:20])
    with pytest.raises(V2MError, match="truncated or corrupt"):
        artifacts.read_artifact(path, "v2m.rhythm")


def test_missing_and_directory(tmp_path):
    with pytest.raises(V2MError, match="no such file"):
        artifacts.read_artifact(tmp_path / "nope.json", "v2m.rhythm")
    with pytest.raises(V2MError, match="is a directory"):
        artifacts.read_artifact(tmp_path, "v2m.rhythm")


def test_no_overwrite_without_force(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(V2MError, match="already exists"):
        artifacts.write_output(b"new", path, force=False)
    assert path.read_text() == "old"
    artifacts.write_output(b"new", path, force=True)
    assert path.read_text() == "new"


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.wav"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer died")
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_path_empty_output_is_an_error(tmp_path):
    with pytest.raises(V2MError, match="produced no output"):
        with artifacts.atomic_path(tmp_path / "y.wav"):
            pass
    assert os.listdir(tmp_path) == []


def test_an_output_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for dest in (blocker / "out.json", blocker / "sub" / "out.json"):  # a file where a folder should be
        with pytest.raises(V2MError, match="cannot write it"):
            artifacts.check_output(dest, force=False)
        with pytest.raises(V2MError, match="cannot write it"):
            artifacts.write_output(b"data", dest, force=False)
        with pytest.raises(V2MError, match="cannot write it"):
            with artifacts.atomic_path(dest):
                pass

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the disk fills while the bytes go out
    target = tmp_path / "full" / "out.json"
    with pytest.raises(V2MError, match="No space left on device"):
        artifacts.atomic_write_bytes(target, b"x" * 100_000)
    monkeypatch.undo()
    assert os.listdir(tmp_path / "full") == []  # no half-written file, no temporary left


def test_source_hash_matches_bytes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert artifacts.source_of(path, path=path)["sha256"] == artifacts.source_of("f.bin", data=b"abc")["sha256"]
