"""Diffusion-aware PTQ (quant/timestep.py, issue 21) on the tiny debug diffusion model: trajectory calibration
records several timesteps, each step selects its timestep group's ranges, W8A8 stays close to float, and the
packed checkpoint round-trips through save/load and `generate --backend diffusion`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.models.test_diffusion import shared_folder, trained
from tests.stages.generate.test_diffusion import controls_for


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from v2m import artifacts
    from v2m.stages.tokens.vocab import load_tokenizer

    model_path = trained(shared_folder(tmp_path_factory))[0]
    folder = tmp_path_factory.mktemp("dptq")
    controls = folder / "controls.json"
    artifacts.write_artifact(artifacts.make_artifact("v2m.controls", controls_for(load_tokenizer(), bars=8), stage="test",
                                                     config={}, seed=0), str(controls), True)
    return model_path, controls, folder


def _inputs(model, t: float, seed: int = 0):
    from v2m.models.diffusion import CHANNELS, null_affect

    g = torch.Generator().manual_seed(seed)
    W = model.config.window
    x = torch.randn((2, W, CHANNELS), generator=g)
    feats = torch.rand((2, W, model.config.n_features), generator=g)
    return x, torch.full((2,), t), -torch.ones_like(x), torch.zeros(2, W), feats, null_affect(2)


def _quantized(model_path, controls, **options):
    import v2m.quant  # noqa: F401  (registers the quantized loader)
    from v2m.models.loading import load_model
    from v2m.quant.timestep import DiffusionQuantConfig
    from v2m.stages.quantize_diffusion import quantize_diffusion_model
    from v2m.stages.tokens.vocab import load_tokenizer

    loaded = load_model(str(model_path))
    quant = quantize_diffusion_model(loaded, DiffusionQuantConfig(sampler_steps=6, **options), str(controls), 2,
                                     load_tokenizer(loaded.meta["tokenizer"]).stats)
    return loaded, quant


def test_trajectory_calibration_records_several_timesteps(setup):
    from v2m.quant.timestep import DiffusionQuantConfig, calibration_steps

    steps = calibration_steps(DiffusionQuantConfig(sampler_steps=20))
    assert len(steps) >= 6 and min(steps) == 0 and max(steps) == 19  # uniform ends + normal draws
    assert calibration_steps(DiffusionQuantConfig(sampler_steps=20, ranges="single")) == [10]
    _, quant = _quantized(*setup[:2])
    assert len(quant["calibration"]["steps_recorded"]) >= 4
    ranges = [m for m in quant["activations"].values()]
    assert ranges and all(a["groups"] == 4 and a["mode"] == "static" for a in ranges)
    assert quant["diffusion"]["output"] == ["out"] and "out" not in quant["activations"]  # float activations
    _, naive = _quantized(*setup[:2], ranges="single")
    assert naive["calibration"]["steps_recorded"] == [3] and naive["diffusion"]["time_path"] == []
    assert naive["diffusion"]["output"] == [] and "out" in naive["activations"]


def test_each_step_selects_its_timestep_groups_ranges(setup):
    from v2m.quant.timestep import TimestepQuantLinear

    loaded, _ = _quantized(*setup[:2])
    model = loaded.model
    layers = [m for m in model.modules() if isinstance(m, TimestepQuantLinear)]
    ranges = torch.stack([layer.act_range for layer in layers])
    assert not torch.allclose(ranges[:, 0], ranges[:, -1])  # the noisiest and the cleanest group differ
    with torch.no_grad():
        model(*_inputs(model, 0.97))
        assert {layer.group for layer in layers} == {0}
        before = model(*_inputs(model, 0.03))
        assert {layer.group for layer in layers} == {3}
        for layer in layers:  # squash only group 3's ranges: a t in group 3 changes, a t in group 0 does not
            layer.act_range[3] = layer.act_range[3] * 0.05
        after = model(*_inputs(model, 0.03))
        assert not torch.allclose(before, after)


def test_w8a8_stays_close_to_float(setup):
    from v2m.models.loading import load_model

    float_model = load_model(str(setup[0])).model
    loaded, _ = _quantized(*setup[:2])
    with torch.no_grad():
        for t in (0.9, 0.5, 0.1):
            ref = float_model(*_inputs(float_model, t))
            out = loaded.model(*_inputs(float_model, t))
            assert float(((out - ref) ** 2).sum() / (ref ** 2).sum()) < 0.02, t


def test_the_concatenated_roll_input_gets_a_range_per_segment(setup):
    """Q-Diffusion's split: the roll input `inp` (noisy roll | known roll and mask) is one Linear per segment with
    its own activation ranges. The calibration runs generate's sampler (a first window and its continuation), so
    the known segment's ranges cover the known roll's ±1 (a first window alone has no known steps: [0, 0]) while
    the noisy segment's noisiest group spans the noise; the naive baseline and --concat whole keep it whole."""
    from torch import nn

    from v2m.errors import V2MError
    from v2m.quant.linear import ColumnSplitLinear, split_columns
    from v2m.quant.timestep import TimestepQuantLinear

    loaded, quant = _quantized(*setup[:2])
    model = loaded.model
    widths = model.concat_inputs()["inp"]
    assert quant["splits"] == {"inp": widths} and isinstance(model.inp, ColumnSplitLinear)
    noisy, known = model.inp.parts
    assert isinstance(noisy, TimestepQuantLinear) and isinstance(known, TimestepQuantLinear)
    assert noisy.bias is not None and known.bias is None  # the bias rides on the first part only
    assert known.act_range[:, 0].max() < -0.5 and known.act_range[:, 1].min() > 0.5, known.act_range
    assert known.act_range.abs().max() < 1.2  # the roll carries the last step's s(0) ≈ 0.013 of noise
    assert noisy.act_range[0, 1] - noisy.act_range[0, 0] > 3.0, noisy.act_range  # t near 1: mostly noise
    for options in ({"ranges": "single"}, {"concat": "whole"}):
        plain, whole = _quantized(*setup[:2], **options)
        assert "splits" not in whole and isinstance(plain.model.inp, TimestepQuantLinear), options
    linear = nn.Linear(sum(widths), 8)
    x = torch.randn(3, 5, sum(widths))
    with torch.no_grad():
        assert torch.allclose(ColumnSplitLinear.from_linear(linear, widths)(x), linear(x), atol=1e-5)
    holder = nn.Sequential(nn.Linear(10, 4))
    with pytest.raises(V2MError, match="does not fit"):
        split_columns(holder, {"0": [4, 5]})
    with pytest.raises(V2MError, match="does not fit"):
        split_columns(holder, {"1": [10]})


def test_mlp_gelu_is_fused_into_its_layer_on_every_kernel(setup):
    """quantize and load fold the MLP's tanh-GELU into its first layer (fuse_activations): the kernel applies it
    (cpu-vnni in C, any other after its product), and the model computes what it computed unfused."""
    from torch import nn

    from v2m.quant.timestep import TimestepQuantLinear

    loaded, _ = _quantized(*setup[:2])
    model = loaded.model
    fused = [b.mlp[0] for b in model.blocks]
    assert all(isinstance(f, TimestepQuantLinear) and f.activation == "gelu_tanh" for f in fused)
    assert all(isinstance(b.mlp[1], nn.Identity) for b in model.blocks)
    inputs = _inputs(model, 0.4)
    with torch.no_grad():
        out = model(*inputs)
        for f, b in zip(fused, model.blocks):  # undo the fusion: GELU as a module again, after the plain layer
            f.activation, b.mlp[1] = None, nn.GELU(approximate="tanh")
        unfused = model(*inputs)
        for f, b in zip(fused, model.blocks):
            f.activation, b.mlp[1] = "gelu_tanh", nn.Identity()
            f.set_kernel("reference")
        other_kernel = model(*inputs)
    assert float(((out - unfused) ** 2).sum() / (unfused ** 2).sum()) < 1e-10
    assert float(((other_kernel - unfused) ** 2).sum() / (unfused ** 2).sum()) < 1e-8


def test_a_step_dependent_time_path_is_computed_in_each_steps_forward(setup, monkeypatch):
    """A naive model with the time path quantized at the scheme and per-group ranges (--time-path scheme) computes
    differently at each step, so the sampler does not batch its time path over the steps: the first window computes
    it in each step's forward (where the hook has chosen the step's ranges), the later windows reuse it."""
    import v2m.stages.generate.diffusion as sampler
    from v2m.stages.tokens.structure import plan_structure
    from v2m.stages.tokens.vocab import load_tokenizer

    loaded, quant = _quantized(*setup[:2], time_path="scheme")
    assert quant["diffusion"]["time_path"] == [] and loaded.model.time_path_per_step()
    apart, _ = _quantized(*setup[:2])
    assert not apart.model.time_path_per_step()  # time path apart: float activations, the same at every step
    vocab = load_tokenizer(loaded.meta["tokenizer"])
    controls = controls_for(vocab, bars=12)
    controls["structure"] = plan_structure(controls)
    calls = []
    original = type(loaded.model).modulation
    monkeypatch.setattr(type(loaded.model), "modulation", lambda self, t, a: calls.append(len(t)) or original(self, t, a))
    sampler.sample_rolls(loaded.model, controls, vocab.stats, sampler.DiffusionSettings(steps=3, guidance=2.0), seed=5)
    assert calls == [2, 2, 2]


def test_quantize_cli_round_trip_and_generate(setup, tmp_path):
    import v2m.quant  # noqa: F401
    from v2m.models.loading import load_model

    model_path, controls, _ = setup
    out = tmp_path / "q.safetensors"
    run = lambda *a: subprocess.run([sys.executable, "-m", "v2m", *a], capture_output=True, text=True, cwd=tmp_path)  # noqa: E731
    result = run("quantize", str(model_path), "-o", str(out), "--scheme", "w4a8", "--calib", str(controls),
                 "--calib-samples", "2", "--calib-steps", "6")
    assert result.returncode == 0, result.stderr
    loaded = load_model(str(out))
    quant = loaded.meta["quant"]
    assert loaded.backend == "diffusion" and quant["scheme"] == "w4a8" and quant["diffusion"]["ranges"] == "timestep"
    assert quant["splits"] == {"inp": loaded.model.concat_inputs()["inp"]}  # loading rebuilt the split input
    assert len(loaded.model.inp.parts) == len(quant["splits"]["inp"])
    again = load_model(str(out))
    with torch.no_grad():
        assert torch.equal(loaded.model(*_inputs(loaded.model, 0.4)), again.model(*_inputs(again.model, 0.4)))
    tokens = tmp_path / "t.json"
    result = run("generate", str(controls), "--model", str(out), "--backend", "diffusion", "--steps", "3",
                 "-o", str(tokens))
    assert result.returncode == 0, result.stderr
    data = json.loads(tokens.read_text())["data"]
    assert data["ids"] and set(data["parts"]) == {"bass", "accompaniment"}
    bad = run("quantize", str(model_path), "-o", str(tmp_path / "b.safetensors"), "--scheme", "w8a8")
    assert bad.returncode == 1 and "calib" in bad.stderr and "Traceback" not in bad.stderr


def test_evaluate_gates_a_quantized_diffusion_model(setup, tmp_path):
    model_path, controls, _ = setup
    out = tmp_path / "q.safetensors"
    run = lambda *a: subprocess.run([sys.executable, "-m", "v2m", *a], capture_output=True, text=True, cwd=tmp_path)  # noqa: E731
    assert run("quantize", str(model_path), "-o", str(out), "--scheme", "w8a8", "--calib", str(controls),
               "--calib-samples", "2", "--calib-steps", "6").returncode == 0
    report = tmp_path / "r.json"
    ok = run("evaluate", "--model", str(out), "--reference", str(model_path), "--corpus", str(controls), "--no-speed",
             "--fail-if", "note_f1<0.5,v_err>0.1,scale_consistency<0.1", "-o", str(report))
    assert ok.returncode == 0, ok.stderr
    metrics = json.loads(report.read_text())["data"]["metrics"]
    assert 0.5 <= metrics["note_f1"] <= 1.0 and 0.0 <= metrics["v_err"] < 0.1 and metrics["size_ratio"] < 1.0
    planted = run("evaluate", "--model", str(out), "--reference", str(model_path), "--corpus", str(controls),
                  "--no-speed", "--fail-if", "v_err>-1")  # a bar no model can pass: the failure path exits 3
    assert planted.returncode == 3, planted.stderr


def test_qalora_finetune_lowers_v_err_at_w4a8(setup):
    """EfficientDM-style LoRA fine-tune (quant/qalora.py): the training loss (the quantized layers' relative output
    error) falls, the adapters kept lower the simulated quantized model's error over every recorded call, and the merged, RTN-quantized model's per-step v error against float on held-out steps
    of the float trajectory stays near plain RTN W4A8's (the merged adapters do not damage the model). Only that,
    within 1.5×: the debug model has one 4-bit layer (64-groups divide no other), so both v errors sit at float
    round-off (~6e-6) and which is lower depends on the CPU's kernels, torch's version and the sampler's settings
    (lower on the dev box at guidance 2; 6.21e-6 vs 6.13e-6 on the H200 machine's CPU; 6.56e-6 vs 6.17e-6 with
    torch 2.7; 6.61e-6 vs 5.96e-6 at guidance 3). That qalora lowers the v error where it matters is the shipped
    model's figure in BENCHMARKS.md (issue 21)."""
    from v2m.models.loading import load_model
    from v2m.stages.diffusion_eval import v_error
    from v2m.stages.quantize_diffusion import read_controls
    from v2m.stages.tokens.vocab import load_tokenizer

    model_path, controls = setup[:2]
    reference = load_model(str(model_path)).model
    rtn, _ = _quantized(model_path, controls, scheme="w4a8")
    # the calibration's 42 calls of 2 rows (a first window and its continuation, 6 steps): at 1e-3 Adam's first
    # steps raise the error more than 80 steps win back (kept step 0); 1e-4 lowers it (1.83e-6 → 1.66e-6 on the dev box)
    tuned, quant = _quantized(model_path, controls, scheme="w4a8", method="qalora", qalora_steps=80, qalora_lr=1e-4)
    assert quant["method"] == "qalora+rtn+timestep"
    record = quant["qalora"]
    assert record["loss_end"] < record["loss_start"], record
    assert record["recorded_error_after"] < record["recorded_error_before"] and record["kept_step"] > 0, record
    payload, stats = read_controls(controls)[0], load_tokenizer().stats
    errors = [v_error(m.model, reference, payload, stats, 6, 2.0, seed=5) for m in (rtn, tuned)]
    assert errors[1] < 1.5 * errors[0], errors


def test_mixed_precision_keeps_the_most_sensitive_layers_at_w8a8(setup):
    """ViDiT-Q-style mixed precision: each groupable layer's v error measured alone at 4 and 8 bits, the greedy
    allocator of the transformer path (quant/mixed.py) spends the budget; the chosen layers are stored and run as
    w8a8, the rest as w4; a budget too small for any promotion keeps them at 4 bits. (The debug model's only layer
    that 64-groups divide is its MLP's second Linear; the others are 8-bit in any w4a8 model.)"""
    from v2m.models.loading import load_model
    from v2m.quant.linear import quant_linears
    from v2m.stages.diffusion_eval import v_error
    from v2m.stages.quantize_diffusion import read_controls
    from v2m.stages.tokens.vocab import load_tokenizer

    model_path, controls = setup[:2]
    reference = load_model(str(model_path)).model
    plain, _ = _quantized(model_path, controls, scheme="w4a8")
    assert {n: m.scheme.bits for n, m in quant_linears(plain.model).items()}["blocks.0.mlp.2"] == 4
    split = [m for n, m in quant_linears(plain.model).items() if n.startswith("inp.parts.")]  # split (Q-Diffusion)
    assert len(split) == 2 and all(layer.scheme.bits == 8 for layer in split)  # 64 divides neither width
    mixed, quant = _quantized(model_path, controls, scheme="w4a8", mixed=True, budget_bits=9.0)
    record = quant["mixed"]
    assert quant["method"] == "mixed+rtn+timestep" and record["w8a8_layers"] == ["blocks.0.mlp.2"]
    assert all(s["4"] >= s["8"] for s in record["sensitivity_v_err"].values())
    assert quant_linears(mixed.model)["blocks.0.mlp.2"].scheme.bits == 8
    _, tight = _quantized(model_path, controls, scheme="w4a8", mixed=True, budget_bits=4.3)
    assert tight["mixed"]["w8a8_layers"] == [] and tight["mixed"]["average_bits"] <= 4.3
    payload, stats = read_controls(controls)[0], load_tokenizer().stats
    errors = [v_error(m.model, reference, payload, stats, 6, 2.0, seed=5) for m in (plain, mixed)]
    assert errors[1] <= errors[0] * 1.05, errors


def test_read_controls_goes_through_the_artifact_contract(setup, tmp_path):
    """Controls are parsed by artifacts.parse_artifact (format, version, schema): a bare payload or another
    artifact as the one file is one clear line; in a folder, other JSON is passed over and the controls kept."""
    from v2m.errors import V2MError
    from v2m.stages.quantize_diffusion import read_controls

    controls = setup[1]
    payload = json.loads(controls.read_text())["data"]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(payload))
    with pytest.raises(V2MError, match="expected a v2m.controls"):
        read_controls(bare)
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(payload))
    (folder / "b.json").write_text(controls.read_text())
    assert read_controls(folder) == [payload]
