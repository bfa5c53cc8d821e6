"""Quantized checkpoints: a v2m.model safetensors file whose `quant` metadata names each layer's scheme.

Per quantized layer `<name>` the file holds `<name>.packed` (uint8 codes, packed along the input
dimension), `<name>.scale` (float16; float32 for fp8; E4M3 bits for nvfp4), `<name>.zero` (uint8,
asymmetric only), `<name>.global_scale` (nvfp4), `<name>.bias`, `<name>.smooth` (SmoothQuant scales
that could not be folded). Float weights that stay unquantized (embedding, norms) are stored as
bfloat16, so size ratios are against a bf16 model; they are cast back to float32 on load.

`models.load_model` hands a checkpoint with `quant` metadata to `load_quantized`, which rebuilds the
float skeleton from the config, swaps in QuantLinear layers of the recorded schemes, loads the
tensors (no unpickling), moves to the device and picks kernels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from v2m.errors import V2MError

from .formats import Scheme
from .linear import QuantLinear, quant_linears, replace_module, set_kernels

STORED_FLOAT = torch.bfloat16


def save_quantized(path: str | Path, model: nn.Module, loaded, quant: dict, force: bool = False) -> None:
    """Write the quantized `model` (made from `loaded`, a LoadedModel) with its `quant` metadata."""
    from v2m.models.checkpoint import save_model

    quantized = set(quant_linears(model))
    extra = {}
    for name, t in model.state_dict().items():
        owner = name.rpartition(".")[0]
        if owner not in quantized and t.is_floating_point():
            extra[name] = t.detach().to(STORED_FLOAT)
    training = dict(loaded.meta.get("training") or {})
    training["quantized_from"] = Path(loaded.path).name if loaded.path else None
    save_model(path, model, loaded.config, loaded.meta["tokenizer"], loaded.meta["tokenizer_hash"], training,
               quant=quant, force=force, extra_tensors=extra)


def build_skeleton(config, quant: dict) -> tuple[nn.Module, int]:
    """A float model of `config` with the module layout the quantized checkpoint was saved from,
    and the parameter count of the plain float model."""
    from v2m.models.registry import build_model

    model = build_model(config)
    count = sum(p.numel() for p in model.parameters())
    if quant.get("rotate"):
        from .rotate import prepare_rotated_skeleton

        prepare_rotated_skeleton(model)
    return model, count


def load_quantized(path: str | Path, config, meta: dict, device: str = "cpu", kernel: str = "auto") -> nn.Module:
    """The quantized model stored at `path` (checked metadata `meta`), in eval mode on `device`, kernels set."""
    from v2m.models.checkpoint import STATE_PREFIXES, load_tensors

    quant = meta["quant"]
    if quant.get("version") != 1 or "layers" not in quant:
        raise V2MError(f"{path}: quantized checkpoint format {quant.get('version')!r} is not supported", "re-quantize with this v2m")
    tensors = {k: v for k, v in load_tensors(path).items() if not k.startswith(STATE_PREFIXES)}
    model, logical_params = build_skeleton(config, quant)
    for name, scheme_json in quant["layers"].items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise V2MError(f"{path}: quantized layer {name} does not exist in a {config.backend} model of this config")
        layer = QuantLinear(linear.in_features, linear.out_features, Scheme.from_json(scheme_json),
                            bias=f"{name}.bias" in tensors, smooth=f"{name}.smooth" in tensors)
        replace_module(model, name, layer)
    quantized = set(quant["layers"])
    tensors = {k: v.float() if v.is_floating_point() and k.rpartition(".")[0] not in quantized else v for k, v in tensors.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "mismatch"
        raise V2MError(f"{path}: quantized tensors do not match the recorded layout ({first})")
    model = model.to(device).eval()
    # evaluate's count_params asks num_params(): report the float model's parameters, not the packed buffers
    model.num_params = lambda: logical_params
    set_kernels(model, kernel)
    return model


def stored_bytes(path: str | Path) -> int:
    """Bytes of tensor data in a checkpoint (the file minus its JSON header)."""
    import struct

    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
    return Path(path).stat().st_size - 8 - header_len
