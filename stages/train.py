"""train: a token corpus → a v2m.model checkpoint (with a resumable checkpoint, a JSON log and a model card).

The training loop, its schedule, checkpoints and DDP are v2m.models.train; this is the job as the command
line asks for it: the corpus folder, the preset, the overrides. Several GPUs: `torchrun -m v2m train ...`
(each rank runs this same function; models.train reads the rank from torchrun's environment).
"""

from __future__ import annotations

from v2m.models.train import RunOptions, train


def train_model(corpus: str, output: str, *, preset: str = "small", overrides: dict | None = None,
                resume: str | None = None, init: str | None = None, checkpoint: str | None = None,
                device: str = "auto", max_minutes: float | None = None, save_dtype: str = "float32",
                force: bool = False) -> dict:
    """Train (or resume, or fine-tune from `init`) and write `output`; returns the run's summary.
    `overrides` replace fields of the preset's [train] table (None values keep the preset's)."""
    return train(RunOptions(corpus, output, preset, dict(overrides or {}), resume, init, checkpoint, device,
                            max_minutes, save_dtype, force))


def train_diffusion_model(rolls: str, output: str, *, preset: str = "diffusion", overrides: dict | None = None,
                          device: str = "auto", max_minutes: float | None = None, save_dtype: str = "float32",
                          force: bool = False, ignored: dict | None = None) -> dict:
    """`v2m train --backend diffusion`: a roll set → a diffusion checkpoint (models/diffusion_train.py). Options of
    the transformer's loop that this one does not have are one line, not silently dropped."""
    from v2m.errors import V2MError
    from v2m.models.diffusion_train import train_diffusion

    given = [flag for flag, value in (ignored or {}).items() if value is not None]
    if given:
        raise V2MError(f"{given[0]} is an option of the transformer's training, not of --backend diffusion",
                       "drop it (the diffusion preset sets its window; a run is short enough to restart)")
    return train_diffusion(rolls, output, preset=preset, overrides=overrides, device=device, max_minutes=max_minutes,
                           save_dtype=save_dtype, force=force)
