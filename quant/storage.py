"""Quantized checkpoints: a v2m.model safetensors file whose `quant` metadata names each layer's scheme.

Per quantized layer `<name>` the file holds `<name>.packed` (uint8 codes, packed along the input
dimension), `<name>.scale` (float16; float32 for fp8; E4M3 bits for nvfp4), `<name>.zero` (uint8,
asymmetric only), `<name>.global_scale` (nvfp4), `<name>.bias`, `<name>.smooth` (SmoothQuant scales
that could not be folded). Float weights that stay unquantized (embedding, norms) are stored as
bfloat16, so size ratios are against a bf16 model; they are cast back to float32 on load.

The file is core's v2m.model container (v2m.checkpoint); this package registers `load_quantized` there
as the loader for metadata key `quant` (quant/__init__.py), so `v2m.models.load_model` hands it the float
model it built from the config (the skeleton) with the checkpoint's tensors: the loader swaps in QuantLinear
layers of the recorded schemes, loads the tensors, moves to the device and picks kernels. Neither package
imports the other.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from v2m.checkpoint import model_metadata, save_checkpoint
from v2m.config import to_dict
from v2m.errors import V2MError

from .formats import Scheme
from .linear import QuantLinear, quant_linears, replace_module, set_kernels, split_columns
from .rotate import prepare_rotated_skeleton

STORED_FLOAT = torch.bfloat16


def save_quantized(path: str | Path, model: nn.Module, loaded, quant: dict, force: bool = False) -> None:
    """Write the quantized `model` (made from `loaded`, the float model's LoadedModel) with its `quant` metadata.

    Quantized layers are stored as their packed buffers; float tensors outside them (embedding, norms) as
    STORED_FLOAT."""
    quantized = set(quant_linears(model))
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        if name.rpartition(".")[0] not in quantized and t.is_floating_point():
            t = t.to(STORED_FLOAT)
        tensors[name] = t.to("cpu").contiguous()
    meta = loaded.meta
    training = dict(meta.get("training") or {})
    training["quantized_from"] = Path(loaded.path).name if loaded.path else None
    save_checkpoint(path, tensors, model_metadata(loaded.backend, to_dict(loaded.config), meta["tokenizer"],
                                                  meta["tokenizer_hash"], training, quant=quant), force)


def prepare_skeleton(model: nn.Module, quant: dict) -> nn.Module:
    """The float `model` rearranged into the module layout the quantized checkpoint was saved from."""
    if quant.get("rotate"):
        prepare_rotated_skeleton(model)
    if quant.get("splits"):  # concatenated inputs quantized per segment (quant/timestep.py)
        split_columns(model, quant["splits"])
    return model


def load_quantized(model: nn.Module, tensors: dict, meta: dict, *, path: str, device: str = "cpu",
                   kernel: str = "auto") -> nn.Module:
    """The quantized model in `tensors` (checked metadata `meta`), built on the float skeleton `model` of its
    config, in eval mode on `device`, kernels set (the `quant` loader of v2m.checkpoint.LOADERS)."""
    quant = meta["quant"]
    if quant.get("version") != 1 or "layers" not in quant:
        raise V2MError(f"{path}: quantized checkpoint format {quant.get('version')!r} is not supported", "re-quantize with this v2m")
    logical_params = sum(p.numel() for p in model.parameters())
    try:
        model = prepare_skeleton(model, quant)
    except V2MError as e:
        raise V2MError(f"{path}: {e.message}", "re-quantize with this v2m") from None
    for name, scheme_json in quant["layers"].items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise V2MError(f"{path}: quantized layer {name} does not exist in a {meta['backend']} model of this config")
        layer = QuantLinear(linear.in_features, linear.out_features, Scheme.from_json(scheme_json),
                            bias=f"{name}.bias" in tensors, smooth=f"{name}.smooth" in tensors)
        replace_module(model, name, layer)
    if quant.get("activations"):  # a diffusion checkpoint's timestep-aware activation quantization
        from .timestep import attach

        attach(model, quant)
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
