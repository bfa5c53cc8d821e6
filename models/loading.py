"""Models from checkpoints and back: build the backend's module from a v2m.model file, save one.

The file itself — header checks, metadata, atomic deterministic writes, no unpickling — is core's
(v2m.checkpoint). Here the config becomes a module of its backend (models/registry.py) and the weights go
into it. A checkpoint whose metadata names a kind of layer the float model cannot hold (`quant`) is handed,
with the float module built as its skeleton, to the loader registered for that key in
`v2m.checkpoint.LOADERS` (v2m.quant registers its own on import), so this package never imports quant.

A training checkpoint (`v2m train` writes one every `ckpt_every` steps) is a v2m.model file too,
with the optimiser moments under `optim.*`, RNG states under `rng.*`, the best-validation weights
under `best.*` and a `train_state` JSON entry;
`load_model` reads its weights like any other checkpoint.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from v2m import log
from v2m.checkpoint import (
    LOADERS,
    STATE_PREFIXES,
    load_tensors,
    model_metadata,
    read_header,
    read_meta,
    save_checkpoint,
)
from v2m.config import to_dict
from v2m.errors import V2MError
from v2m.limits import MAX_MODEL_PARAMETERS

from .config import ModelConfig, model_config_from_dict
from .registry import BACKENDS


@dataclass
class LoadedModel:
    model: Any            # nn.Module in eval mode
    config: ModelConfig
    meta: dict            # tokenizer, tokenizer_hash, training, quant (None if not quantized), train_state (or None)
    backend: str
    path: str = ""


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
    tensors = model_tensors(model, dtype)
    if extra_tensors:
        tensors.update({k: v.detach().to("cpu").contiguous() for k, v in extra_tensors.items()})
    meta = model_metadata(config.backend, to_dict(config), tokenizer, tokenizer_hash, training, quant, train_state)
    save_checkpoint(path, tensors, meta, force)


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


@contextlib.contextmanager
def _no_init():
    """Skip torch.nn.init's random initialisation while a skeleton is built on the meta device: on meta tensors the
    init functions run through torch._refs, whose first use imports torch._dynamo (1.2 s of every v2m process that
    loads a model, measured on the dev box; 5 s on the GPU machine without cached bytecode) only to fill tensors that
    have no data."""
    import torch.nn.init as init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}
    for n in names:
        setattr(init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)


def check_declared_shapes(path: str | Path, config: ModelConfig, header: dict, quantized: bool = False) -> None:
    """Refuse, before any tensor is read or module allocated, a checkpoint whose config declares more parameters
    than MAX_MODEL_PARAMETERS or (a float checkpoint) weights of other names or shapes than its tensor table holds.

    The module is built on torch's meta device, which allocates no memory, so the declared shapes are the
    backend's own (no formula per backend to keep in step). A quantized checkpoint stores packed layers of other
    shapes: there the stored bytes must hold at least 2 bits per declared parameter."""
    import math

    import torch

    with torch.device("meta"), _no_init():
        skeleton = BACKENDS.get(config.backend)(config)
    declared = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    parameters = sum(math.prod(shape) for shape in declared.values())
    if parameters > MAX_MODEL_PARAMETERS:
        raise V2MError(f"{path}: its config declares {parameters:,} parameters, more than the limit of "
                       f"{MAX_MODEL_PARAMETERS:,}", "this is not a model v2m can run")
    stored = {name: tuple(entry.get("shape", ())) for name, entry in header.items()
              if name != "__metadata__" and not name.startswith(STATE_PREFIXES)}
    if quantized:
        stored_bytes = sum(entry["data_offsets"][1] - entry["data_offsets"][0] for name, entry in header.items()
                           if name != "__metadata__")
        if parameters > 4 * stored_bytes:
            raise V2MError(f"{path}: its config declares {parameters:,} parameters, its tensors hold {stored_bytes:,} "
                           "bytes (less than 2 bits each)", "the checkpoint is truncated or its config altered")
        return
    for name, shape in declared.items():
        if name not in stored:
            raise V2MError(f"{path}: weights do not match the model config (missing tensor {name})")
        if stored[name] != shape:
            raise V2MError(f"{path}: weights do not match the model config ({name} is {list(stored[name])}, the "
                           f"config declares {list(shape)})")
    unexpected = sorted(set(stored) - set(declared))
    if unexpected:
        raise V2MError(f"{path}: weights do not match the model config (unexpected tensor {unexpected[0]})")


def load_model(path: str | Path, device: str = "cpu", kernel: str = "auto", dtype: str | None = None) -> LoadedModel:
    """Load a v2m.model checkpoint → LoadedModel with the model in eval mode on `device`.

    Weights stored as bf16/fp16 are cast to float32 unless `dtype` says otherwise. Quantized
    checkpoints (metadata `quant`) are handed to `v2m.quant.load_quantized`, which picks the kernel.
    """
    device = resolve_device(device)
    meta = read_meta(path)
    try:
        config = model_config_from_dict(meta["config"])
    except V2MError as e:
        raise V2MError(f"{path}: {e.message}", e.hint) from None
    check_declared_shapes(path, config, read_header(path), quantized=bool(meta.get("quant")))
    tensors = {k: v for k, v in load_tensors(path).items() if not k.startswith(STATE_PREFIXES)}
    model = BACKENDS.get(config.backend)(config)
    special = [key for key in LOADERS.names() if meta.get(key)]
    if meta.get("quant") and not special:
        raise V2MError(f"{path}: a quantized model, and no loader for quantized checkpoints is registered",
                       "import v2m.quant first (the v2m command does), which registers it")
    if special:  # e.g. a quantized checkpoint: its loader swaps layers of the float skeleton and loads the tensors
        model = LOADERS.get(special[0])(model, tensors, meta, path=str(path), device=device, kernel=kernel)
        return LoadedModel(model=model, config=config, meta=meta, backend=meta["backend"], path=str(path))
    if kernel != "auto":
        log.warn(f"{path}: a float model; --kernel {kernel} applies to quantized models only (v2m quantize)")
    target = _dtype(dtype) or next(model.parameters()).dtype
    tensors = {k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "shape mismatch"
        raise V2MError(f"{path}: weights do not match the model config ({first})")
    model = model.to(device=device, dtype=target).eval()
    return LoadedModel(model=model, config=config, meta=meta, backend=meta["backend"], path=str(path))
