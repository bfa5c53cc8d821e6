"""Checkpoints: round trip, metadata, dtype, and one clear line for each kind of bad file."""

import json
import struct

import pytest
import torch

from tests.models.corpus import VOCAB, tokenizer
from tests.models.helpers import tiny_model
from v2m.checkpoint import read_meta
from v2m.errors import V2MError
from v2m.models.loading import load_model, save_model


def saved(tmp_path, dtype=None):
    model = tiny_model(seed=1)
    tok, tok_hash = tokenizer()
    path = tmp_path / "m.safetensors"
    save_model(path, model, model.config, tok, tok_hash, {"steps": 3}, dtype=dtype)
    return model, path


def test_round_trip_same_logits_and_metadata(tmp_path):
    model, path = saved(tmp_path)
    loaded = load_model(path)
    ids = torch.randint(0, VOCAB, (2, 16))
    torch.testing.assert_close(loaded.model(ids), model(ids))
    assert loaded.config == model.config and loaded.backend == "transformer"
    assert loaded.meta["tokenizer"] == tokenizer()[0] and loaded.meta["tokenizer_hash"] == tokenizer()[1]
    assert loaded.meta["training"] == {"steps": 3} and loaded.meta["quant"] is None
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8:8 + header_len])
    assert header["__metadata__"]["format"] == "v2m.model"
    assert "embed.weight" in header and not any("rope" in k for k in header)  # tied, derived tables not stored


def test_bf16_storage_halves_the_file_and_loads_as_fp32(tmp_path):
    _, full = saved(tmp_path)
    model, half = saved(tmp_path / "h", dtype="bfloat16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)
    assert next(loaded.model.parameters()).dtype == torch.float32
    ids = torch.randint(0, VOCAB, (1, 12))
    torch.testing.assert_close(loaded.model(ids), model(ids), atol=0.05, rtol=0.05)


def test_no_overwrite_without_force(tmp_path):
    model, path = saved(tmp_path)
    with pytest.raises(V2MError, match="already exists"):
        save_model(path, model, model.config, {}, "h", {})
    save_model(path, model, model.config, {}, "h", {}, force=True)


def test_bad_files_fail_with_one_line(tmp_path):
    _, path = saved(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(V2MError, match="truncated"):
        load_model(truncated)
    header_cut = tmp_path / "cut2.safetensors"
    header_cut.write_bytes(data[:40])
    with pytest.raises(V2MError, match="truncated"):
        load_model(header_cut)

    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"format": "pt"})
    with pytest.raises(V2MError, match="not a v2m model checkpoint, found a 'pt' safetensors file"):
        load_model(other)
    midi = tmp_path / "song.safetensors"
    midi.write_bytes(b"MThd\x00\x00\x00\x06" + b"\x00" * 20)
    with pytest.raises(V2MError, match="found a MIDI file"):
        load_model(midi)
    with pytest.raises(V2MError, match="no such file"):
        read_meta(tmp_path / "missing.safetensors")
    for err in (V2MError, ):
        try:
            load_model(truncated)
        except err as e:
            assert "\n" not in e.one_line()
