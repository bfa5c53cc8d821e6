"""Encode music or a video's rhythm as v2m tokens; build a token corpus from a folder of scores.

INPUT is recognised by its content, not its extension:

  a MIDI file          → a v2m.tokens artifact (REMI tokens with control tokens read off the music)
  a v2m.rhythm artifact → a v2m.controls artifact (the same controls, measured on the video)
  a folder, or --source music21 → a corpus folder: token shards (safetensors) + index.json

Examples:

  v2m encode-tokens song.mid -o song.tokens.json
  v2m extract-rhythm clip.mp4 | v2m encode-tokens - | v2m generate - | v2m decode - -o clip.mid
  v2m encode-tokens --source music21 -o corpus/ --jobs 2
  v2m encode-tokens my_midis/ -o corpus/            # resumes if interrupted; --force rebuilds
  v2m encode-tokens --source music21 -o corpus/ --calibrate presets/tokenizer.json   # re-derive the control classes
  v2m encode-tokens --source music21 --rolls -o rolls.safetensors   # the diffusion backend's training set
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import artifacts, log
from v2m.errors import V2MError

Input = Annotated[Optional[str], typer.Argument(help="MIDI file, v2m.rhythm artifact, or folder of scores ('-' = stdin).",
                                                show_default=False)]


def command(
    input: Input = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Output artifact ('-' = stdout), or the corpus folder.")] = "-",
    source: Annotated[Optional[str], typer.Option("--source", help="Build a corpus from a bundled collection: 'music21'.")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Tokenizer JSON, or a model checkpoint (the tokenizer it was trained with) [default: presets/tokenizer.json].")] = None,
    calibrate: Annotated[Optional[Path], typer.Option("--calibrate", help="Corpus only: calibrate the control classes on "
                                                      "this corpus' train split and write the new tokenizer JSON here.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Corpus only: parallel worker processes.")] = 2,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=64, help="Corpus only: longest sequence; longer pieces "
                                            "are cut at bar lines.")] = 2048,
    keep_work: Annotated[bool, typer.Option("--keep-work", help="Corpus only: keep the per-file analyses (DIR/.work).")] = False,
    rolls: Annotated[bool, typer.Option("--rolls", help="With a folder or --source music21: write the diffusion "
                                        "backend's roll set instead (-o ROLLS.safetensors): the multi-part pieces' "
                                        "notes by role (melody, bass, accompaniment) on their beat grid, with "
                                        "their controls; train it with `v2m train ROLLS --backend diffusion`.")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output.")] = False,
) -> None:
    from v2m.stages.tokens.encode import corpus_from, encode_file

    if rolls:
        from v2m.stages.tokens.rolls import rolls_from
        from v2m.stages.tokens.vocab import load_tokenizer

        if output in (None, "-"):
            raise V2MError("a roll set is a file, not a stream", "pass -o ROLLS.safetensors")
        artifacts.check_output(output, force, inputs=[input, tokenizer])
        summary = rolls_from(source, input, output, load_tokenizer(tokenizer), jobs=jobs, force=force)
        log.info(f"roll set: {summary['pieces']} multi-part pieces, {summary['notes']} notes, {summary['steps']} steps "
                 f"({summary['files']} files read; without a multi-part piece: {summary['skipped']})")
        return

    if source is not None or (input not in (None, "-") and Path(input).is_dir()):
        corpus_from(input, source, output, tokenizer, calibrate, jobs, max_tokens, keep_work, force)
        return
    if input is None:
        raise V2MError("no INPUT given", "pass a MIDI file, a v2m.rhythm artifact ('-' for stdin), a folder, or --source music21")
    if calibrate is not None:
        raise V2MError("--calibrate works only when building a corpus", "pass a folder or --source music21")
    artifacts.check_output(output, force, inputs=[input, tokenizer])
    artifact = encode_file(input, tokenizer)
    artifacts.write_artifact(artifact, output, force)
    payload = artifact["data"]
    what = "tokens" if artifact["format"] == "v2m.tokens" else "bars"
    log.info(f"{artifact['format']}: {len(payload.get('ids', payload.get('bars', [])))} {what}")
