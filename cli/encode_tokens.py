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
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Tokenizer JSON [default: presets/tokenizer.json].")] = None,
    calibrate: Annotated[Optional[Path], typer.Option("--calibrate", help="Corpus only: calibrate the control classes on "
                                                      "this corpus' train split and write the new tokenizer JSON here.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Corpus only: parallel worker processes.")] = 2,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=64, help="Corpus only: longest sequence; longer pieces "
                                            "are cut at bar lines.")] = 2048,
    keep_work: Annotated[bool, typer.Option("--keep-work", help="Corpus only: keep the per-file analyses (DIR/.work).")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output.")] = False,
) -> None:
    if source is not None or (input not in (None, "-") and Path(input).is_dir()):
        _corpus(input, source, output, tokenizer, calibrate, jobs, max_tokens, keep_work, force)
        return
    if input is None:
        raise V2MError("no INPUT given", "pass a MIDI file, a v2m.rhythm artifact ('-' for stdin), a folder, or --source music21")
    if calibrate is not None:
        raise V2MError("--calibrate works only when building a corpus", "pass a folder or --source music21")
    artifacts.check_output(output, force)
    data = artifacts.read_bytes(input)
    kind = artifacts.sniff(data[:64])
    from v2m.stages.tokens import load_tokenizer

    if kind == "midi":
        vocab = load_tokenizer(tokenizer)
        payload = _encode_midi(data, input, vocab)
        fmt, stage_source = "v2m.tokens", artifacts.source_of(input, data)
    elif kind == "json":
        rhythm = artifacts.parse_artifact(data, str(input), "v2m.rhythm")
        vocab = load_tokenizer(tokenizer)
        from v2m.stages.video_controls import controls_from_rhythm

        payload = controls_from_rhythm(rhythm["data"], vocab)
        fmt, stage_source = "v2m.controls", artifacts.source_of(input, data)
    else:
        raise V2MError(f"{input}: expected a MIDI file or a v2m.rhythm artifact, found {artifacts.describe(kind)}",
                       "make a rhythm artifact with: v2m extract-rhythm VIDEO")
    config = {"tokenizer": str(tokenizer) if tokenizer else "presets/tokenizer.json", "tokenizer_hash": vocab.hash}
    artifacts.write_artifact(artifacts.make_artifact(fmt, payload, stage="encode-tokens", config=config, source=stage_source),
                             output, force)
    log.info(f"{fmt}: {len(payload.get('ids', payload.get('bars', [])))} {'tokens' if fmt == 'v2m.tokens' else 'bars'}")


def _encode_midi(data: bytes, name: str, vocab) -> dict:
    """MIDI bytes → the v2m.tokens payload (ids + the MIDI's own beat grid in seconds)."""
    import symusic

    from v2m.stages.beat_grid import beat_grid_seconds
    from v2m.stages.tokens import encode_score

    if len(data) >= 10 and int.from_bytes(data[8:10], "big") == 2:
        raise V2MError(f"{name}: a type-2 MIDI file (independent sequences) is not supported", "convert it to type 0 or 1")
    try:
        score = symusic.Score.from_midi(data)
    except Exception as e:
        raise V2MError(f"{name}: not a readable MIDI file ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})",
                       "the file is truncated or corrupt")
    if score.note_num() == 0:
        raise V2MError(f"{name}: the MIDI file has no notes", "nothing to encode")
    ids = encode_score(score, vocab)
    meter = score.time_signatures[0].numerator if len(score.time_signatures) else 4
    beat_times, downbeats = beat_grid_seconds(score, vocab)
    return {"tokenizer_hash": vocab.hash, "ids": ids, "meter": int(meter), "beat_times": beat_times, "downbeats": downbeats}


def _corpus(input, source, output, tokenizer, calibrate, jobs, max_tokens, keep_work, force) -> None:
    from v2m.stages import corpus

    if output in (None, "-"):
        raise V2MError("a corpus is a folder, not a stream", "pass -o DIR/")
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise V2MError(f"{output}: exists and is not a folder")
    if (out_dir / "index.json").exists() and not force:
        raise V2MError(f"{output}: already holds a corpus (index.json)", "pass --force to rebuild it")
    if source is not None:
        if source != "music21":
            raise V2MError(f"unknown --source '{source}'", "available: music21")
        if input is not None:
            raise V2MError("pass either a folder or --source, not both")
        _, sources = corpus.music21_sources()
        label = "music21 corpus"
    else:
        folder = Path(input)
        sources = corpus.folder_sources(folder)
        label = folder.name
    if not sources:
        raise V2MError(f"{input or source}: no score files found (MIDI, ABC, kern, MusicXML)")
    vocab = None
    if calibrate is None:
        from v2m.stages.tokens import load_tokenizer

        vocab = load_tokenizer(tokenizer)
    elif calibrate.exists() and not force:
        raise V2MError(f"{calibrate}: already exists", "pass --force to overwrite it")
    log.info(f"building a corpus from {len(sources)} files with {jobs} job(s) → {out_dir}/")
    config = corpus.CorpusConfig(max_tokens=max_tokens)
    corpus.build_corpus(sources, out_dir, vocab=vocab, calibrate_to=calibrate, config=config, jobs=jobs,
                        keep_work=keep_work, source_label=label)
