"""A checkpoint's config is checked against its tensors before anything is allocated (issue 19: a config asking for
petabytes was an internal error after minutes of allocation)."""

import json
import struct

import pytest

from tests.models.corpus import tokenizer
from tests.models.helpers import tiny_model
from v2m.errors import V2MError
from v2m.models.loading import load_model, save_model


def saved(tmp_path):
    model = tiny_model()
    tok, tok_hash = tokenizer()
    path = tmp_path / "m.safetensors"
    save_model(path, model, model.config, tok, tok_hash, {"steps": 0})
    return path


def with_config(path, **changes):
    """The same file with its metadata's config changed (header rewritten, tensor data kept)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    config = json.loads(header["__metadata__"]["config"])
    config.update(changes)
    header["__metadata__"]["config"] = json.dumps(config, sort_keys=True)
    text = json.dumps(header).encode()
    out = path.with_name("changed.safetensors")
    out.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return out


@pytest.mark.parametrize("changes,message", [
    ({"n_layers": 10**9}, "n_layers 1000000000 is outside 1..1024"),
    ({"max_len": 10**12}, "max_len 1000000000000 is outside"),
    ({"d_model": 1 << 16, "n_heads": 1024, "n_layers": 1024, "d_ff": 1 << 18},
     "parameters, more than the limit of 4,000,000,000"),
    ({"d_model": 64}, "embed.weight is [48, 32], the config declares [48, 64]"),
    ({"n_layers": 3}, "missing tensor blocks.2."),
    ({"n_layers": 1}, "unexpected tensor blocks.1."),
])
def test_a_config_that_does_not_match_its_tensors_is_one_line(tmp_path, changes, message):
    path = with_config(saved(tmp_path), **changes)
    with pytest.raises(V2MError, match="changed.safetensors") as info:
        load_model(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_unchanged_checkpoint_loads(tmp_path):
    assert load_model(saved(tmp_path)).config.n_layers == 2
