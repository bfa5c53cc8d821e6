"""Model checkpoints: safetensors with the config and tokenizer in `__metadata__` (docs/ARTIFACTS.md, v2m.model).

Loading never unpickles: the header is JSON, tensors are raw bytes (safetensors). The header is
checked before any tensor is read, so a file that is not a v2m model, a truncated file and a file
from another tool each fail with one line.

A training checkpoint (`v2m train` writes one every `ckpt_every` steps) is a v2m.model file too,
with the optimiser moments under `optim.*`, RNG states under `rng.*`, the best-validation weights
under `best.*` and a `train_state` JSON entry;
`load_model` reads its weights like any other checkpoint.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from v2m.artifacts import FORMATS, atomic_path, check_output, describe, sniff_path
from v2m.config import to_dict
from v2m.errors import V2MError

from .config import ModelConfig, model_config_from_dict

FORMAT, VERSION = "v2m.model", 1
STATE_PREFIXES = ("optim.", "rng.", "best.")  # tensors in a training checkpoint that are not model weights


@dataclass
class LoadedModel:
    model: Any            # nn.Module in eval mode
    config: ModelConfig
    meta: dict            # tokenizer, tokenizer_hash, training, quant (None if not quantized), train_state (or None)
    backend: str
    path: str = ""


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
    """The decoded metadata of a v2m.model file: config, tokenizer, training, quant, train_state (dicts)."""
    raw = read_header(path)["__metadata__"]
    meta: dict[str, Any] = {"backend": raw.get("backend", "transformer"), "tokenizer_hash": raw.get("tokenizer_hash", "")}
    for key in ("config", "tokenizer", "training", "quant", "train_state"):
        try:
            meta[key] = json.loads(raw[key]) if key in raw else None
        except json.JSONDecodeError:
            raise V2MError(f"{path}: corrupt checkpoint metadata ({key} is not valid JSON)")
    if meta["config"] is None:
        raise V2MError(f"{path}: v2m model checkpoint without a model config", "re-create it with: v2m train")
    return meta


def _dtype(name: str | None):
    import torch

    table = {None: None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise V2MError(f"unknown dtype '{name}'", "use float32, bfloat16 or float16")
    return table[name]


def model_tensors(model, dtype: str | None = None) -> dict:
    """The model's persistent weights as contiguous CPU tensors (tied weights are stored once)."""
    target = _dtype(dtype)
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        if target is not None and t.is_floating_point():
            t = t.to(target)
        out[name] = t.to("cpu").contiguous()
    return out


def save_model(path: str | Path, model, config: ModelConfig, tokenizer: dict, tokenizer_hash: str, training: dict,
               quant: dict | None = None, force: bool = False, dtype: str | None = None,
               extra_tensors: dict | None = None, train_state: dict | None = None) -> None:
    """Write a v2m.model checkpoint atomically (temp file + rename); refuses to overwrite without `force`."""
    from safetensors.torch import save_file

    check_output(path, force)
    tensors = model_tensors(model, dtype)
    if extra_tensors:
        tensors.update({k: v.detach().to("cpu").contiguous() for k, v in extra_tensors.items()})
    meta = {"format": FORMAT, "version": str(VERSION), "backend": config.backend,
            "config": json.dumps(to_dict(config), sort_keys=True),
            "tokenizer": json.dumps(tokenizer, sort_keys=True, ensure_ascii=False),
            "tokenizer_hash": tokenizer_hash, "training": json.dumps(training, sort_keys=True)}
    if quant is not None:
        meta["quant"] = json.dumps(quant, sort_keys=True)
    if train_state is not None:
        meta["train_state"] = json.dumps(train_state, sort_keys=True)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_tensors(path: str | Path, device: str = "cpu") -> dict:
    """All tensors of a checked checkpoint (safetensors: no unpickling)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_header(path)
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as e:
        raise V2MError(f"{path}: unreadable checkpoint ({e})")


def resolve_device(name: str | None) -> str:
    """A --device value checked against this machine: "auto" is cuda when a GPU is visible, else cpu; "cpu",
    "cuda" and "cuda:N" are kept when the machine has them; anything else is one clear line (not torch's
    list of device types, nor an assertion deep in a CPU-only torch)."""
    import re

    import torch

    device = str(name or "auto").strip().lower()  # a torch.device reads as its string
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise V2MError(f"unknown device '{name}'", "use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
        raise V2MError(f"--device {device}: no CUDA GPU is visible here{build}", "use --device cpu or auto")
    if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise V2MError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)",
                       "number them from cuda:0")
    return device


def load_model(path: str | Path, device: str = "cpu", kernel: str = "auto", dtype: str | None = None) -> LoadedModel:
    """Load a v2m.model checkpoint → LoadedModel with the model in eval mode on `device`.

    Weights stored as bf16/fp16 are cast to float32 unless `dtype` says otherwise. Quantized
    checkpoints (metadata `quant`) are handed to `v2m.quant.load_quantized`, which picks the kernel.
    """
    from .registry import BACKENDS

    device = resolve_device(device)
    meta = read_meta(path)
    config = model_config_from_dict(meta["config"])
    if meta.get("quant"):
        try:
            from v2m.quant import load_quantized  # type: ignore[attr-defined]
        except ImportError:
            raise V2MError(f"{path}: a quantized model, and this v2m has no quantized-model loader")
        model = load_quantized(path, config, meta, device=device, kernel=kernel)
        return LoadedModel(model=model, config=config, meta=meta, backend=meta["backend"], path=str(path))
    if kernel != "auto":  # a float model has no quantized layers: still, a misspelt name is an error, not ignored
        from v2m import log
        from v2m.quant.kernels import KERNELS

        KERNELS.get(kernel)
        log.warn(f"{path}: a float model; --kernel {kernel} applies to quantized models only (v2m quantize)")
    tensors = {k: v for k, v in load_tensors(path).items() if not k.startswith(STATE_PREFIXES)}
    model = BACKENDS.get(config.backend)(config)
    target = _dtype(dtype) or next(model.parameters()).dtype
    tensors = {k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "shape mismatch"
        raise V2MError(f"{path}: weights do not match the model config ({first})")
    model = model.to(device=device, dtype=target).eval()
    return LoadedModel(model=model, config=config, meta=meta, backend=meta["backend"], path=str(path))
