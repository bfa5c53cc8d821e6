"""Packed checkpoints: what is stored, and that loading gives back the same model."""

import json

import pytest
import torch
from safetensors import safe_open

from tests.quant.helpers import saved_tiny_model
from v2m.models.loading import load_model
from v2m.quant.pipeline import QuantizeConfig, quantize_model
from v2m.quant.storage import save_quantized
from v2m.stages.quantize import CalibrationSource, calibration_windows


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    return saved_tiny_model(tmp_path_factory.mktemp("ckpt"))


@pytest.mark.parametrize("scheme,method,group,asym", [("w4", "rotate+gptq", 32, True), ("w8a8", "smoothquant", None, False),
                                                      ("nvfp4", "rtn", None, False), ("w3", "gptq", 64, True)])
def test_round_trip_same_logits(float_model, tmp_path, scheme, method, group, asym):
    path, corpus = float_model
    loaded = load_model(path)
    calib = calibration_windows(CalibrationSource(str(corpus), samples=4, length=64), loaded.meta["tokenizer_hash"],
                                loaded.config.max_len, seed=0)
    quant = quantize_model(loaded.model, QuantizeConfig(scheme, method, group=group, asym=asym), calib)
    out = tmp_path / "q.safetensors"
    save_quantized(out, loaded.model, loaded, quant)

    again = load_model(out, kernel="reference")
    ids = calib.ids[:2, :40]
    for layer in loaded.model.modules():
        if hasattr(layer, "set_kernel"):
            layer.set_kernel("reference")
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids), again.model(ids), atol=2e-2)  # bf16-stored embedding/norms
    meta = again.meta["quant"]
    assert meta["scheme"] == scheme and meta["calibration"]["sha256"] == calib.sha256
    assert set(meta["layers"]) == {f"blocks.{i}.{n}" for i in range(2) for n in ("attn.qkv", "attn.out", "mlp.up", "mlp.down")}
    assert again.model.num_params() == sum(p.numel() for p in load_model(path).model.parameters())


def test_stored_tensors_are_packed(float_model, tmp_path):
    path, _ = float_model
    loaded = load_model(path)
    quant = quantize_model(loaded.model, QuantizeConfig("w4", "rtn", group=32, asym=True))
    out = tmp_path / "w4.safetensors"
    save_quantized(out, loaded.model, loaded, quant)
    with safe_open(str(out), "pt") as f:
        packed = f.get_tensor("blocks.0.mlp.up.packed")
        assert packed.dtype == torch.uint8 and packed.shape == (256, 32)  # [2·d_ff, 64 inputs / 2 per byte]
        assert f.get_tensor("blocks.0.mlp.up.scale").shape == (256, 2)
        assert f.get_tensor("blocks.0.mlp.up.zero").dtype == torch.uint8
        assert f.get_tensor("embed.weight").dtype == torch.bfloat16
        layer = json.loads(f.metadata()["quant"])["layers"]["blocks.0.mlp.up"]
    assert layer == {"name": "w4", "kind": "int", "bits": 4, "group": 32, "symmetric": False, "act": "none"}
    assert out.stat().st_size < 0.45 * path.stat().st_size / 2  # well under half of the bf16 size of this tiny model
