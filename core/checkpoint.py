"""The v2m.model checkpoint file: safetensors with v2m's metadata, read and written without unpickling.

This module knows the *container* — the safetensors header, the `__metadata__` keys (format, version, backend,
config, tokenizer, training, quant, train_state), atomic writes with deterministic bytes, and the registry of
loaders for checkpoint kinds the model packages cannot read alone. It knows no model: `v2m.models.loading`
builds modules from it, and `v2m.quant.storage` stores packed layers in it.

Why a loader registry: a quantized checkpoint (metadata `quant`) holds packed layers that only `v2m.quant`
can rebuild, yet `v2m.models` loads checkpoints and must not import `v2m.quant` (docs/ARCHITECTURE.md: models
and quant each depend only on core). So `v2m.quant` registers its loader here when it is imported, and
`models.loading` asks this registry for the loader named by the metadata key — the way torchao swaps layers
of a model it was handed without the model code knowing torchao.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from .artifacts import FORMATS, atomic_path, check_output, describe, sniff_path
from .errors import V2MError
from .registry import Registry

FORMAT, VERSION = "v2m.model", 1
STATE_PREFIXES = ("optim.", "rng.", "best.")  # tensors in a training checkpoint that are not model weights
JSON_KEYS = ("config", "tokenizer", "training", "quant", "train_state")  # metadata entries holding JSON

# metadata key → loader(model, tensors, meta, path=..., device=..., kernel=...) -> nn.Module, for checkpoints
# whose layers the float model cannot hold (v2m.quant registers "quant")
LOADERS = Registry("checkpoint loader")


def read_header(path: str | Path) -> dict:
    """The safetensors header of a v2m.model file (tensor table + `__metadata__`), checked; no tensor read.

    Raises one-line V2MErrors for a missing file, a non-safetensors file, a truncated file and a
    safetensors file that is not a v2m model.
    """
    p = Path(path)
    kind = sniff_path(p)
    maker = FORMATS[FORMAT][1]
    if kind == "missing":
        raise V2MError(f"{path}: no such file")
    if kind != "safetensors":
        raise V2MError(f"{path}: expected a v2m.model checkpoint (safetensors), found {describe(kind)}", f"make one with: {maker}")
    size = p.stat().st_size
    with open(p, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        raw = f.read(header_len)
    if len(raw) < header_len:
        raise V2MError(f"{path}: truncated checkpoint (the header is cut off)", "re-copy or re-train it")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise V2MError(f"{path}: corrupt checkpoint (its safetensors header is not valid JSON)")
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        found = meta.get("format")
        what = f"a '{found}' safetensors file" if found else "a safetensors file without v2m metadata"
        raise V2MError(f"{path}: not a v2m model checkpoint, found {what}", f"make one with: {maker}")
    if meta.get("version") != str(VERSION):
        raise V2MError(f"{path}: v2m.model version {meta.get('version')!r} is not supported (this v2m reads {VERSION})",
                       f"re-create it with: {maker}")
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        raise V2MError(f"{path}: truncated checkpoint ({size} bytes, the tensors need {8 + header_len + end})",
                       "re-copy or re-train it")
    return header


def read_meta(path: str | Path) -> dict:
    """The decoded metadata of a v2m.model file: backend, tokenizer_hash, and the JSON entries as dicts."""
    raw = read_header(path)["__metadata__"]
    meta: dict[str, Any] = {"backend": raw.get("backend", "transformer"), "tokenizer_hash": raw.get("tokenizer_hash", "")}
    for key in JSON_KEYS:
        try:
            meta[key] = json.loads(raw[key]) if key in raw else None
        except json.JSONDecodeError:
            raise V2MError(f"{path}: corrupt checkpoint metadata ({key} is not valid JSON)")
    if meta["config"] is None:
        raise V2MError(f"{path}: v2m model checkpoint without a model config", "re-create it with: v2m train")
    return meta


def model_metadata(backend: str, config: dict, tokenizer: dict, tokenizer_hash: str, training: dict,
                   quant: dict | None = None, train_state: dict | None = None) -> dict[str, str]:
    """The `__metadata__` table of a checkpoint (safetensors metadata is str → str: JSON entries are dumped)."""
    meta = {"format": FORMAT, "version": str(VERSION), "backend": backend,
            "config": json.dumps(config, sort_keys=True),
            "tokenizer": json.dumps(tokenizer, sort_keys=True, ensure_ascii=False),
            "tokenizer_hash": tokenizer_hash, "training": json.dumps(training, sort_keys=True)}
    if quant is not None:
        meta["quant"] = json.dumps(quant, sort_keys=True)
    if train_state is not None:
        meta["train_state"] = json.dumps(train_state, sort_keys=True)
    return meta


def save_checkpoint(path: str | Path, tensors: dict, metadata: dict[str, str], force: bool = False) -> None:
    """Write CPU tensors and metadata as a safetensors file, atomically; refuses to overwrite without `force`.

    The bytes are a function of the content: safetensors' writer keeps the metadata in a hash map whose order
    changes from process to process, so the header is written back with its keys sorted (tensor offsets are
    relative to the data, so only the header's own bytes change).
    """
    from safetensors.torch import save_file

    check_output(path, force)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "r+b") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
            text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            text += b" " * (header_len - len(text))  # the same content: the same length, padding included
            if len(text) != header_len:  # never seen; a rewrite of the whole file would be needed
                raise V2MError(f"{path}: the checkpoint header could not be sorted in place")
            f.seek(8)
            f.write(text)


def load_tensors(path: str | Path, device: str = "cpu") -> dict:
    """All tensors of a checked checkpoint (safetensors: no unpickling)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_header(path)
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as e:
        raise V2MError(f"{path}: unreadable checkpoint ({e})")


def stored_bytes(path: str | Path) -> int:
    """Bytes of tensor data in a checkpoint (the file minus its JSON header)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
    return Path(path).stat().st_size - 8 - header_len
