"""quantize for the diffusion backend: the float DiT denoiser → a packed checkpoint with timestep-aware activation
quantization (v2m.quant.timestep).

Calibration conditions come from controls (v2m.controls artifacts: `v2m encode-tokens` of the videos' rhythm, or a
folder of them): each becomes the conditions of its first window (stages/generate/diffusion.py), and the stage runs
the model's own DDIM sampler on them, with classifier-free guidance as `generate` does, while quant records the
Linear inputs along the trajectory. quant never sees controls nor the sampler's code: it gets a `sample()` callable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from v2m import artifacts, log
from v2m.errors import V2MError
from v2m.models.diffusion import CHANNELS, ddim_sample
from v2m.quant.timestep import DiffusionQuantConfig, quantize_diffusion
from v2m.stages.generate.diffusion import DEFAULT_GUIDANCE, piece_conditions


def read_controls(source: str | Path) -> list[dict]:
    """Controls payloads from a v2m.controls artifact or every *.json of a folder, read through the artifact
    contract (format, version and schema checked: `artifacts.parse_artifact`). In a folder, other JSON files
    (rhythm, tokens, reports) are passed over with a warning; a single file that is not controls is an error."""
    path = Path(source)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    out = []
    for f in files:
        try:
            out.append(artifacts.parse_artifact(artifacts.read_bytes(f), str(f), "v2m.controls")["data"])
        except V2MError as e:
            if not path.is_dir():
                raise V2MError(e.message, e.hint or "a diffusion model is calibrated and scored on v2m.controls "
                                                    "files (v2m encode-tokens RHYTHM.json -o controls.json)") from None
            log.warn(f"skipped: {e.message}")
    if not out:
        raise V2MError(f"{source}: no controls files found", "pass a v2m.controls file or a folder of them "
                                                             "(v2m encode-tokens RHYTHM.json -o controls.json)")
    return out


def calibration_conditions(controls: list[dict], model, stats: dict, samples: int):
    """(known, mask, features, affect) of the first window of each piece, cycled up to `samples` windows."""
    W, F = model.config.window, model.config.n_features
    feats, affects = [], []
    for i in range(samples):
        features, _, affect = piece_conditions(controls[i % len(controls)], model.config.n_density, stats)
        f = np.zeros((W, F), np.float32)
        n = min(W, len(features))
        f[:n] = features[:n]
        feats.append(f)
        affects.append(affect)
    features = torch.as_tensor(np.stack(feats))
    known = -torch.ones((samples, W, CHANNELS))
    return known, torch.zeros((samples, W)), features, torch.tensor(affects, dtype=torch.long)


def quantize_diffusion_model(loaded, config: DiffusionQuantConfig, calib: str, samples: int, stats: dict) -> dict:
    """Quantize `loaded.model` (a float diffusion LoadedModel) in place; returns the `quant` metadata."""
    config.check()
    controls = read_controls(calib)
    known, mask, features, affect = calibration_conditions(controls, loaded.model, stats, samples)
    digest = hashlib.sha256(features.numpy().tobytes() + affect.numpy().tobytes()).hexdigest()

    def sample():
        generator = torch.Generator().manual_seed(config.seed)
        ddim_sample(loaded.model, known, mask, features, affect, steps=config.sampler_steps,
                    guidance=DEFAULT_GUIDANCE, generator=generator, clamp_binary=True)  # as generate samples

    log.info(f"calibration: {samples} windows from {len(controls)} controls file(s) in {calib}, "
             f"DDIM {config.sampler_steps} steps, guidance {DEFAULT_GUIDANCE}, sha256 {digest[:12]}")
    return quantize_diffusion(loaded.model, config, sample,
                              {"controls": str(calib), "windows": samples, "sampler_steps": config.sampler_steps,
                               "guidance": DEFAULT_GUIDANCE, "seed": config.seed, "sha256": digest})
