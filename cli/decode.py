"""Turn tokens into music: a MIDI file, audio (FluidSynth), or a video with the music as its sound.

OUT's extension chooses what is written:

  .mid / .midi    MIDI; the tempo map comes from the beat times the tokens carry (from the video), so bars
                  and beats land on the video's beats; a fixed tempo when there are none
  .wav / .flac    audio rendered with FluidSynth and a General MIDI soundfont, loudness normalised
  .mp4/.mov/.mkv  with --video SRC: SRC's video stream copied bit for bit, the music trimmed to its length
                  with a short fade-out; --keep-audio 0.2 mixes SRC's own sound under the music

Examples:

  v2m decode clip.tokens.json -o clip.mid
  v2m decode clip.tokens.json -o clip.wav --program 48 --sample-rate 48000
  v2m decode clip.tokens.json -o clip.v2m.mp4 --video clip.mp4 --keep-audio 0.2
  v2m extract-rhythm clip.mp4 | v2m encode-tokens - | v2m generate - | v2m decode - -o clip.mid
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import log


def command(
    input: Annotated[str, typer.Argument(help="A v2m.tokens artifact ('-' = stdin).", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Output file; its extension chooses MIDI, audio or video "
                                        "('-' writes MIDI to stdout).", show_default=False)],
    video: Annotated[Optional[Path], typer.Option("--video", help="Video to put the music under (for .mp4/.mov/.mkv).")] = None,
    keep_audio: Annotated[float, typer.Option("--keep-audio", min=0.0, max=1.0, help="Gain of the video's own sound mixed "
                                              "under the music (0 = replace it).")] = 0.0,
    soundfont: Annotated[Optional[Path], typer.Option("--soundfont", help="General MIDI .sf2 [default: the first found in "
                                                      "the standard locations].")] = None,
    sample_rate: Annotated[int, typer.Option("--sample-rate", help="Audio sample rate in Hz.")] = 44100,
    program: Annotated[int, typer.Option("--program", min=0, max=127, help="General MIDI program (instrument) of the "
                                         "music track: 0 piano, 24 guitar, 48 strings, 73 flute ...")] = 0,
    sample: Annotated[int, typer.Option("--sample", min=0, help="Which sample of a --num-samples artifact (0 = ids).")] = 0,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Tokenizer JSON, or a model checkpoint (the tokenizer it was trained with) [default: presets/tokenizer.json].")] = None,
    arrange: Annotated[str, typer.Option("--arrange", help="'recorded': harmony, bass and drums in the style that "
                                         "generate recorded (if any); 'none': the generated line alone.")] = "recorded",
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output.")] = False,
) -> None:
    from v2m.stages.decode.render import decode_file

    notes = decode_file(input, output, video=video, keep_audio=keep_audio, soundfont=soundfont,
                        sample_rate=sample_rate, program=program, sample=sample, tokenizer=tokenizer, arrange=arrange,
                        force=force)
    log.info(f"decoded {notes} notes → {output}")
