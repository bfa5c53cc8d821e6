"""Read the rhythm of a video: tempo, beats, bars, cuts and mood, as a v2m.rhythm artifact.

ffmpeg decodes the video at low resolution as a stream, so memory does not
grow with its length. Motion onsets come from dense optical flow (--method
flow, the default; directogram flux as in visbeat) or from frame differences
(--method diff, faster). Tempo is estimated (or given with --tempo), beats are
tracked by dynamic programming, the meter is estimated (or set by --meter),
scene cuts are found on colour-histogram jumps, and each shot gets motion,
brightness and saturation (0..1). Times are seconds from --start.

Edited footage is read scene by scene: the video is split at cuts and where
the motion's tempo changes, and each scene gets its own tempo, confidence,
beats and meter. Where a scene has no confident pulse (camera moves, a few
impacts, a still), its beats are planned instead: every cut on a downbeat,
the strongest motion hits on beats, a tempo that suits the footage's pace
(60-160 BPM, changing by at most x1.25 at a cut where the shots allow it).
--sync chooses; the log says how much of the grid was planned.

A file with audio but no video stream is analysed as audio (the onset
envelope of the sound), so music can be scored on the same scale.

The artifact goes to stdout unless -o is given. INPUT may be a folder: then
-o DIR/ receives one NAME.rhythm.json per video or audio file; a broken file
is reported and the others go on (exit 1 if any failed).

Examples:

  v2m extract-rhythm clip.mp4 > clip.rhythm.json

  v2m extract-rhythm clip.mp4 | v2m encode-tokens -

  v2m extract-rhythm clip.mp4 -o r.json --method diff --start 10 --duration 30

  v2m extract-rhythm clip.mp4 --tempo 120 --meter 3 -o r.json --force

  v2m extract-rhythm trailer.mp4 --sync cuts -o r.json   # every cut on a downbeat

  v2m extract-rhythm song.wav -o song.rhythm.json

  v2m extract-rhythm videos/ -o rhythms/
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import artifacts, log
from v2m.cli.common import Force, for_each_file
from v2m.errors import V2MError
from v2m.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES, media_files


def parse_tempo_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise V2MError(f"--tempo-range '{text}' is not LOW,HIGH", "e.g. --tempo-range 60,180 (BPM)")
    return low, high


def command(
    input: Annotated[str, typer.Argument(help="Video (or audio) file, or a folder of them.", show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output file ('-' = stdout, the default); "
                                                  "a folder (DIR/) when INPUT is a folder.")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="Motion onsets: flow (optical flow) or diff (frame "
                                        "difference, faster).")] = "flow",
    start: Annotated[float, typer.Option("--start", help="Start of the analysed part, seconds.")] = 0.0,
    duration: Annotated[Optional[float], typer.Option("--duration", help="Length of the analysed part, seconds "
                                                      "(default: to the end).", show_default=False)] = None,
    tempo_range: Annotated[str, typer.Option("--tempo-range", help="Tempo range LOW,HIGH in BPM. Motion pulsing faster than HIGH is halved into the range (a 240 BPM flicker reads as 120), not grouped in threes.")] = "60,180",
    tempo: Annotated[Optional[float], typer.Option("--tempo", help="Tempo in BPM: overrides the estimate.",
                                                   show_default=False)] = None,
    meter: Annotated[Optional[int], typer.Option("--meter", help="Beats per bar (default: estimated).",
                                                 show_default=False)] = None,
    sync: Annotated[str, typer.Option("--sync", help="Where the beats come from. auto: each scene's own motion "
                                      "pulse where it is confident, else a grid planned so cuts fall on downbeats "
                                      "and motion hits on beats; pulse: always the motion's pulse; cuts: always "
                                      "the planned grid.")] = "auto",
    force: Force = False,
) -> None:
    if input != "-" and os.path.isfile(input):
        from v2m.media import prefetch_probe

        prefetch_probe(input)  # runs while the analysis libraries below are imported
    from v2m.stages.rhythm.extract import RhythmConfig, extract_rhythm, grid_warning, summary

    config = RhythmConfig(method=method, start=start, duration=duration, tempo_range=parse_tempo_range(tempo_range),
                          tempo=tempo, meter=meter, sync=sync)
    config.check()
    source = Path(input)
    if input != "-" and source.is_dir():
        if not output or not (output.endswith(("/", os.sep)) or Path(output).is_dir()):
            raise V2MError(f"{input}: is a folder, so the output must be a folder too", "pass -o DIR/")
        items = media_files(source, VIDEO_SUFFIXES | AUDIO_SUFFIXES)
        if not items:
            raise V2MError(f"{input}: no video or audio files in it")
        out_dir = Path(output)

        def work(item: Path) -> None:
            dest = out_dir / item.relative_to(source).with_suffix(".rhythm.json")
            artifacts.check_output(dest, force, inputs=[item])
            data = extract_rhythm(str(item), config, say=log.info, warn=log.warn)
            artifacts.write_artifact(data, dest, force=force)
            log.info(f"{item} → {dest}: {summary(data['data'])}")

        code = for_each_file(items, work, what="file")
        if code:
            raise typer.Exit(code)
        return
    if input == "-":
        raise V2MError("extract-rhythm reads a video from a file, not from stdin", "pass the path of the video")
    artifacts.check_output(output, force, inputs=[input])
    artifact = extract_rhythm(input, config, say=log.info, warn=log.warn)
    data = artifact["data"]
    log.info(f"{input}: {summary(data)}")
    warning = grid_warning(data, sync)
    if warning:
        log.warn(f"{input}: {warning}")
    artifacts.write_artifact(artifact, output, force=force)
