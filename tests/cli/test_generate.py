"""`v2m generate` through the CLI entry: artifacts in and out, seeds, rerank, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.media import needs_fluidsynth
from tests.stages.generate.test_generate import debug_model, grid_controls  # noqa: F401  (fixture)
from v2m import artifacts
from v2m.cli.main import main


def rhythm_artifact(bpm: float = 100.0, duration: float = 10.0, frame_rate: float = 30.0, brightness: float = 0.8) -> dict:
    """A v2m.rhythm artifact with an onset peak on every beat (what extract-rhythm gives for a clean clip)."""
    period = 60.0 / bpm
    beats = np.arange(0.4, duration - 0.05, period)
    envelope = np.zeros(int(round(duration * frame_rate)))
    envelope[np.round(beats * frame_rate).astype(int)] = 1.0
    data = {"kind": "video", "duration": duration, "source_fps": 30.0, "frame_rate": frame_rate, "method": "diff",
            "envelope": envelope.round(3).tolist(),
            "tempo": {"bpm": bpm, "confidence": 0.9, "half": bpm / 2, "double": bpm * 2, "source": "estimated"},
            "beats": beats.round(3).tolist(), "beat_strength": [1.0 if i % 4 == 0 else 0.5 for i in range(len(beats))],
            "meter": 4, "downbeats": beats[::4].round(3).tolist(), "cuts": [5.0],
            "segments": [{"start": 0.0, "end": 5.0, "motion": 0.6, "brightness": brightness, "saturation": 0.5},
                         {"start": 5.0, "end": duration, "motion": 0.3, "brightness": brightness, "saturation": 0.5}]}
    return artifacts.make_artifact("v2m.rhythm", data, stage="tests", source={"name": "clip.mp4", "sha256": "0" * 64})


def run_cli(capsysbinary, *argv):
    code = main([str(a) for a in argv])
    captured = capsysbinary.readouterr()
    return code, captured.out, captured.err.decode()


def test_rhythm_in_tokens_out_byte_identical_for_a_seed(tmp_path, capsysbinary, debug_model):  # noqa: F811
    model = debug_model[0]
    rhythm = tmp_path / "clip.rhythm.json"
    artifacts.write_artifact(rhythm_artifact(), rhythm)
    code, first, err = run_cli(capsysbinary, "generate", rhythm, "--model", model, "--seed", 3, "--device", "cpu")
    assert code == 0, err
    again = run_cli(capsysbinary, "generate", rhythm, "--model", model, "--seed", 3, "--device", "cpu")[1]
    assert first == again
    out = json.loads(first)
    assert out["format"] == "v2m.tokens" and out["created_by"]["seed"] == 3
    data = out["data"]
    assert data["tokenizer_hash"] == debug_model[2].hash
    # the rhythm's bars, after a pickup bar from the first frame (the first beat is 0.4 s in)
    assert data["downbeats"] == [0.0] + rhythm_artifact()["data"]["downbeats"]
    assert data["controls"]["mode"] == "major" and data["controls"]["register"] == "high"  # a bright clip
    assert data["arrange"]["style"] == "pop"
    assert out["created_by"]["config"]["model"]["sha256"] == artifacts.sha256_file(model)
    other = run_cli(capsysbinary, "generate", rhythm, "--model", model, "--seed", 4, "--device", "cpu")[1]
    assert json.loads(other)["data"]["ids"] != data["ids"]


@needs_fluidsynth
def test_controls_in_with_rerank_to_a_file(tmp_path, capsysbinary, debug_model):  # noqa: F811
    controls = tmp_path / "clip.controls.json"
    artifacts.write_artifact(artifacts.make_artifact("v2m.controls", grid_controls(debug_model[2], bars=3),
                                                     stage="tests"), controls)
    out = tmp_path / "best.tokens.json"
    code, stdout, err = run_cli(capsysbinary, "generate", controls, "--model", debug_model[0], "-n", 3, "--rerank",
                                "--arrange", "none", "-o", out)
    assert code == 0, err
    assert stdout == b""  # the artifact went to the file
    data = artifacts.read_artifact(out, "v2m.tokens")["data"]
    assert len(data["rerank"]["scores"]) == 3 and len(data["samples"]) == 2 and data["arrange"] is None
    assert "rerank by the beat F-measure heard in each render" in err
    # no overwrite without --force, and the file is left as it was
    before = out.read_bytes()
    code, _, err = run_cli(capsysbinary, "generate", controls, "--model", debug_model[0], "-o", out)
    assert code == 1 and "already exists" in err and out.read_bytes() == before


def test_wrong_inputs_are_one_line_errors(tmp_path, capsysbinary, debug_model):  # noqa: F811
    midi = tmp_path / "song.mid"
    midi.write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0")
    code, out, err = run_cli(capsysbinary, "generate", midi, "--model", debug_model[0])
    assert code == 1 and out == b""
    assert "expected a v2m.controls or v2m.rhythm artifact, found a MIDI file" in err and len(err.strip().splitlines()) == 1
    rhythm = tmp_path / "r.json"
    artifacts.write_artifact(rhythm_artifact(), rhythm)
    code, _, err = run_cli(capsysbinary, "generate", rhythm, "--model", debug_model[0], "--rerank")
    assert code == 1 and "--rerank needs several candidates" in err
    code, _, err = run_cli(capsysbinary, "generate", rhythm, "--model", debug_model[0], "--style", "no-such-style")
    assert code == 1 and "available:" in err and "pop" in err
    code, _, err = run_cli(capsysbinary, "generate", rhythm, "--model", tmp_path / "missing.safetensors")
    assert code == 1 and "missing.safetensors" in err and len(err.strip().splitlines()) == 1
    # devices and kernels are checked by name and against this machine: one line, not torch's exception
    code, _, err = run_cli(capsysbinary, "generate", rhythm, "--model", debug_model[0], "--device", "tpu")
    assert code == 1 and "unknown device 'tpu'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsysbinary, "generate", rhythm, "--model", debug_model[0], "--kernel", "nope")
    assert code == 1 and "unknown kernel 'nope'" in err and "cpu-vnni" in err and len(err.strip().splitlines()) == 1


def test_a_gpu_asked_for_on_a_machine_without_one_is_one_line(tmp_path, capsysbinary, debug_model):  # noqa: F811
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --device cuda is valid here")
    rhythm = tmp_path / "r.json"
    artifacts.write_artifact(rhythm_artifact(), rhythm)
    for device in ("cuda", "cuda:1"):
        code, out, err = run_cli(capsysbinary, "generate", rhythm, "--model", debug_model[0], "--device", device)
        assert code == 1 and out == b"" and "no CUDA GPU is visible here" in err and "internal error" not in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r.tokens.json").exists()


def test_decode_replays_the_recorded_arrangement(tmp_path, capsysbinary, debug_model):  # noqa: F811
    """generate records the style; decode arranges with it (one named track per role), or not with --arrange none."""
    import symusic

    rhythm = tmp_path / "clip.rhythm.json"
    artifacts.write_artifact(rhythm_artifact(duration=6.0), rhythm)
    tokens, vocab_json = tmp_path / "clip.tokens.json", tmp_path / "vocab.json"
    vocab_json.write_text(json.dumps(debug_model[2].to_json()))
    code, _, err = run_cli(capsysbinary, "generate", rhythm, "--model", debug_model[0], "--style", "folk", "-o", tokens)
    assert code == 0, err
    code, _, err = run_cli(capsysbinary, "decode", tokens, "--tokenizer", vocab_json, "-o", tmp_path / "full.mid")
    assert code == 0, err
    names = sorted(t.name for t in symusic.Score(str(tmp_path / "full.mid")).tracks)
    assert "melody" in names and "bass" in names and "drums" in names
    code, _, err = run_cli(capsysbinary, "decode", tokens, "--tokenizer", vocab_json, "--arrange", "none",
                           "-o", tmp_path / "line.mid")
    assert code == 0, err
    assert len(symusic.Score(str(tmp_path / "line.mid")).tracks) == 1
    code, _, err = run_cli(capsysbinary, "decode", tokens, "--tokenizer", vocab_json, "--arrange", "jazz",
                           "-o", tmp_path / "x.mid")
    assert code == 1 and "expected 'recorded' or 'none'" in err and not (tmp_path / "x.mid").exists()


@pytest.mark.parametrize("edit,field", [
    (lambda s: s["sections"][-1].update(bars=99), "data.structure.sections["),  # a section longer than the video
    (lambda s: s["bars"][3].update(role="restate", source=7, kind="exact"), "data.structure.bars[3].source"),
])
def test_a_hand_edited_structure_plan_that_cannot_be_followed_is_one_line(tmp_path, capsysbinary, debug_model,  # noqa: F811
                                                                          edit, field):
    model = debug_model[0]
    rhythm = tmp_path / "clip.rhythm.json"
    artifacts.write_artifact(rhythm_artifact(), rhythm)
    controls = tmp_path / "clip.controls.json"
    code, _, err = run_cli(capsysbinary, "encode-tokens", rhythm, "--tokenizer", model, "-o", controls)
    assert code == 0, err
    found = json.loads(controls.read_text())
    assert {"sections", "phrases", "bars"} <= set(found["data"]["structure"])
    edit(found["data"]["structure"])
    controls.write_text(json.dumps(found))
    out = tmp_path / "clip.tokens.json"
    code, stdout, err = run_cli(capsysbinary, "generate", controls, "--model", model, "--device", "cpu", "-o", out)
    assert code == 1 and field in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not stdout
