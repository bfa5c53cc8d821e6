"""quantize for the diffusion backend: the float DiT denoiser → a packed checkpoint with timestep-aware activation
quantization (v2m.quant.timestep).

Calibration conditions come from controls (v2m.controls artifacts: `v2m encode-tokens` of the videos' rhythm, or a
folder of them): each is cut to its first CALIB_BARS bars — a first window and a continuation whose known context
is the first window's last bars — and the stage runs generate's own piece sampler on them (stages/generate/
diffusion.py `sample_rolls`: guidance, the scale and meter constraints, restated bars, windows), while quant
records the Linear inputs along the trajectory. So the calibration sees what generate will feed the model, the
known roll and its mask included (a first window alone has none: the known segment of the split roll input,
quant/timestep.py, would get no range). quant never sees controls nor the sampler's code: it gets a `sample()`
callable.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from v2m import artifacts, log
from v2m.errors import V2MError
from v2m.quant.timestep import DiffusionQuantConfig, quantize_diffusion
from v2m.stages.generate.diffusion import (
    DEFAULT_GUIDANCE,
    DiffusionSettings,
    prepare_controls,
    sample_rolls,
)


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


CALIB_BARS = 12  # bars of a calibration piece: two windows of the shipped model (8 bars, the second 4 known)
WINDOWS_PER_PIECE = 2


def calibration_pieces(controls: list[dict], samples: int) -> list[tuple[dict, int]]:
    """[(controls cut to CALIB_BARS bars with a structure plan, batch)]: `samples` windows' worth of pieces
    (WINDOWS_PER_PIECE each), cycling over the controls; a piece drawn k times is one batch of k (different noise)."""
    count = max(1, -(-samples // WINDOWS_PER_PIECE))
    batches = [count // len(controls) + (i < count % len(controls)) for i in range(len(controls))]
    return [(prepare_controls(c, min(len(c.get("bars") or []), CALIB_BARS) or None), b)
            for c, b in zip(controls, batches) if b]


def quantize_diffusion_model(loaded, config: DiffusionQuantConfig, calib: str, samples: int, stats: dict) -> dict:
    """Quantize `loaded.model` (a float diffusion LoadedModel) in place; returns the `quant` metadata."""
    config.check()
    pieces = calibration_pieces(read_controls(calib), samples)
    digest = hashlib.sha256(json.dumps([[c, b] for c, b in pieces], sort_keys=True).encode()).hexdigest()
    settings = DiffusionSettings(steps=config.sampler_steps, guidance=DEFAULT_GUIDANCE)

    def sample():
        for i, (controls, batch) in enumerate(pieces):
            sample_rolls(loaded.model, controls, stats, settings, config.seed + i, batch, share_time_path=False)

    count = sum(batch for _, batch in pieces)
    log.info(f"calibration: {count} piece(s) of ≤{CALIB_BARS} bars from {calib} "
             f"({len(pieces)} controls), DDIM {config.sampler_steps} steps, guidance {DEFAULT_GUIDANCE}, "
             f"sha256 {digest[:12]}")
    return quantize_diffusion(loaded.model, config, sample,
                              {"controls": str(calib), "pieces": count, "bars": CALIB_BARS,
                               "sampler_steps": config.sampler_steps, "guidance": DEFAULT_GUIDANCE,
                               "seed": config.seed, "sha256": digest})
