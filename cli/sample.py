"""Make a synthetic test clip with known ground truth: motion on a known beat, hard cuts at known times.

OUT is a video (.mp4) whose motion hits every beat — balls that land on the beat, a patch that flashes,
a camera pan that reverses — over textured scenes joined by hard cuts, with a slow distractor and pixel
noise; or, for an audio suffix (.wav, .flac, .m4a, ...), a click track with an onset on every beat.
Beside it goes OUT.truth.json: the beat and downbeat times, the cut times and the tempo, for scoring
extract-rhythm, generate or run against the truth.

Examples:

  v2m sample samples/clip.mp4 --if-missing          # ~20 s, 640x360, 100 BPM, a cut every ~6 s

  v2m sample big.mp4 --bpm 150 --duration 300 --width 1280 --height 720 --motion pan --noise 12

  v2m sample clicks.wav --bpm 90 --duration 10       # audio with onsets on the beats

Edited footage (--scenes): scenes joined by hard cuts, each a pulse at its
own tempo (BPM:SECONDS), camera moves with a few impacts and no pulse
(edit:SECONDS) or a held frame (still:SECONDS). The truth lists each scene's
span, tempo and beats, the cuts and the impacts.

  v2m sample montage.mp4 --scenes 84:8,110:8,132:8   # three tempi, two cuts

  v2m sample trailer.mp4 --scenes edit:4,edit:3,edit:5,still:3 --width 320 --height 180
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import log
from v2m.cli.common import Force
from v2m.errors import V2MError

DEFAULTS = {"bpm": 100.0, "duration": 20.0, "width": 640, "height": 360, "fps": 30.0, "seed": 0, "noise": 4.0,
            "meter": 4}


def command(
    out: Annotated[Path, typer.Argument(help="Output: .mp4 (video) or .wav/.flac/.m4a/... (audio with onsets).",
                                        show_default=False)],
    bpm: Annotated[float, typer.Option(help="Tempo of the motion (20..400 BPM).")] = DEFAULTS["bpm"],
    duration: Annotated[float, typer.Option(help="Length in seconds.")] = DEFAULTS["duration"],
    width: Annotated[int, typer.Option(help="Frame width in pixels (even).")] = DEFAULTS["width"],
    height: Annotated[int, typer.Option(help="Frame height in pixels (even).")] = DEFAULTS["height"],
    fps: Annotated[float, typer.Option(help="Frames per second.")] = DEFAULTS["fps"],
    seed: Annotated[int, typer.Option(help="Seed of the phase, the scenes and the cut times.")] = DEFAULTS["seed"],
    motion: Annotated[str, typer.Option(help="bounce, flash, pan or mixed (all three, smaller).")] = "mixed",
    noise: Annotated[float, typer.Option(help="Std of the pixel noise (0..255 scale).")] = DEFAULTS["noise"],
    cuts: Annotated[Optional[int], typer.Option(help="Number of hard cuts (default: one per ~6 s).",
                                                show_default=False)] = None,
    meter: Annotated[int, typer.Option(help="Beats per bar (downbeats hit harder).")] = DEFAULTS["meter"],
    scenes: Annotated[Optional[str], typer.Option("--scenes", help="A montage instead of one pulse: "
                                                  "BPM:SECONDS, edit:SECONDS or still:SECONDS, comma-separated "
                                                  "(--bpm, --duration and --cuts then do not apply).",
                                                  show_default=False)] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="No audio stream in the video.")] = False,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="Do nothing if OUT exists.")] = False,
    force: Force = False,
) -> None:
    from v2m.samples import SampleSpec, write_sample

    if out.exists():
        if if_missing:
            log.info(f"{out}: exists, kept")
            return
        if not force:
            raise V2MError(f"{out}: already exists", "pass --force to overwrite it (or --if-missing to keep it)")
    spec = SampleSpec(bpm=bpm, duration=duration, width=width, height=height, fps=fps, seed=seed, motion=motion,
                      noise=noise, cuts=cuts, meter=meter, audio=not no_audio)
    if scenes is not None:
        write_montage_sample(out, scenes, spec)
        return
    truth = write_sample(out, spec)
    log.info(f"{out}: {truth['duration']:.1f} s at {truth['bpm']:g} BPM, {len(truth['beats'])} beats, "
             f"{len(truth['cuts'])} cuts (truth: {out.name}.truth.json)")


def write_montage_sample(out: Path, text: str, spec) -> None:
    from dataclasses import replace

    from v2m.media import AUDIO_SUFFIXES
    from v2m.montage import parse_scenes, write_montage
    from v2m.samples import write_truth

    if out.suffix.lower() in AUDIO_SUFFIXES:
        raise V2MError(f"{out}: --scenes makes a video", "give OUT a video suffix such as .mp4")
    scenes = [replace(s, motion=spec.motion, meter=spec.meter) if s.kind == "pulse" else s for s in parse_scenes(text)]
    truth = write_montage(out, scenes, spec)
    write_truth(out, truth)
    kinds = ", ".join(f"{s['bpm']:g} BPM" if s["kind"] == "pulse" else s["kind"] for s in truth["scenes"])
    log.info(f"{out}: {truth['duration']:.1f} s, {len(truth['scenes'])} scenes ({kinds}), {len(truth['cuts'])} cuts, "
             f"{len(truth['hits'])} impacts (truth: {out.name}.truth.json)")
