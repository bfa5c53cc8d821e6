"""The v2m.model container: deterministic bytes, checked headers, and the loader registry models consults."""

import json
import struct
import subprocess
import sys

import pytest
import torch

from v2m.checkpoint import LOADERS, model_metadata, read_header, read_meta, save_checkpoint, stored_bytes
from v2m.errors import V2MError


def meta() -> dict:
    return model_metadata("transformer", {"d_model": 8, "n_layers": 1}, {"spec": "é"}, "abc", {"steps": 3},
                          quant={"version": 1, "layers": {}})


def test_same_content_same_bytes_across_processes(tmp_path):
    """safetensors keeps metadata in a hash map whose order changes per process: the header is written sorted."""
    code = ("import sys, torch; from v2m.checkpoint import save_checkpoint, model_metadata; "
            "save_checkpoint(sys.argv[1], {'w': torch.arange(6.0).reshape(2, 3), 'b': torch.ones(2)}, "
            "model_metadata('transformer', {'d': 1}, {'t': 1}, 'h', {'s': 1}, {'version': 1}))")
    paths = [tmp_path / f"m{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    blobs = [p.read_bytes() for p in paths]
    assert blobs[0] == blobs[1] == blobs[2]
    (size,) = struct.unpack("<Q", blobs[0][:8])
    assert size % 8 == 0
    header = json.loads(blobs[0][8:8 + size])
    assert list(header) == sorted(header) and list(header["__metadata__"]) == sorted(header["__metadata__"])


def test_round_trip_and_refusals(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"w": torch.zeros(4)}, meta())
    decoded = read_meta(path)
    assert decoded["config"] == {"d_model": 8, "n_layers": 1} and decoded["tokenizer"] == {"spec": "é"}
    assert decoded["quant"] == {"version": 1, "layers": {}} and decoded["train_state"] is None
    assert stored_bytes(path) == 16 and "w" in read_header(path)
    with pytest.raises(V2MError, match="already exists"):
        save_checkpoint(path, {"w": torch.zeros(4)}, meta())
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(V2MError, match="truncated checkpoint"):
        read_header(path)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(V2MError, match="expected a v2m.model checkpoint"):
        read_header(tmp_path / "x.json")


def test_quant_registers_its_loader_on_import():
    import v2m.quant  # noqa: F401

    assert "quant" in LOADERS
