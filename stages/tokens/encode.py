"""encode-tokens: a MIDI file → a v2m.tokens artifact, a video's rhythm → a v2m.controls artifact, a folder of scores
(or music21's corpus) → a token corpus. Inputs are recognised by content, not by extension.
"""

from __future__ import annotations

from pathlib import Path

import symusic

from v2m import artifacts, log
from v2m.errors import V2MError
from v2m.limits import MAX_BARS
from v2m.stages.tokens import corpus
from v2m.stages.tokens.beat_grid import beat_grid_seconds
from v2m.stages.tokens.convert import encode_score
from v2m.stages.tokens.video_controls import controls_from_rhythm
from v2m.stages.tokens.vocab import load_tokenizer


def encode_file(input: str, tokenizer: Path | None = None) -> dict:
    """The artifact for one input ("-": stdin): tokens for a MIDI file, controls for a v2m.rhythm artifact."""
    data = artifacts.read_bytes(input)
    kind = artifacts.sniff(data[:64])
    if kind == "midi":
        vocab = load_tokenizer(tokenizer)
        payload = encode_midi(data, input, vocab)
        fmt = "v2m.tokens"
    elif kind == "json":
        rhythm = artifacts.parse_artifact(data, str(input), "v2m.rhythm")
        vocab = load_tokenizer(tokenizer)
        payload = controls_from_rhythm(rhythm["data"], vocab)
        if len(payload["bars"]) > MAX_BARS:
            raise V2MError(f"{input}: the rhythm makes {len(payload['bars'])} bars, more than the limit of {MAX_BARS}",
                           "extract the rhythm of a shorter part (extract-rhythm --start/--duration)")
        fmt = "v2m.controls"
    else:
        raise V2MError(f"{input}: expected a MIDI file or a v2m.rhythm artifact, found {artifacts.describe(kind)}",
                       "make a rhythm artifact with: v2m extract-rhythm VIDEO")
    config = {"tokenizer": str(tokenizer) if tokenizer else "presets/tokenizer.json", "tokenizer_hash": vocab.hash}
    return artifacts.make_artifact(fmt, payload, stage="encode-tokens", config=config,
                                   source=artifacts.source_of(input, data))


def encode_midi(data: bytes, name: str, vocab) -> dict:
    """MIDI bytes → the v2m.tokens payload (ids + the MIDI's own beat grid in seconds)."""
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


def corpus_from(input: str | None, source: str | None, output: str | None, tokenizer: Path | None = None,
                 calibrate: Path | None = None, jobs: int = 2, max_tokens: int = 2048, keep_work: bool = False,
                 force: bool = False) -> None:
    """A corpus folder from a folder of scores or a bundled collection (`source`: music21); resumable."""
    if output in (None, "-"):
        raise V2MError("a corpus is a folder, not a stream", "pass -o DIR/")
    out_dir = Path(output)
    if input is not None and artifacts.same_file(out_dir, input):
        raise V2MError(f"{output}: is the folder of scores being read; the corpus goes into a folder of its own",
                       "pass another -o DIR/")
    if calibrate is not None:
        artifacts.check_not_input(calibrate, [tokenizer, input])
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
        vocab = load_tokenizer(tokenizer)
    elif calibrate.exists() and not force:
        raise V2MError(f"{calibrate}: already exists", "pass --force to overwrite it")
    log.info(f"building a corpus from {len(sources)} files with {jobs} job(s) → {out_dir}/")
    config = corpus.CorpusConfig(max_tokens=max_tokens)
    corpus.build_corpus(sources, out_dir, vocab=vocab, calibrate_to=calibrate, config=config, jobs=jobs,
                        keep_work=keep_work, source_label=label)
