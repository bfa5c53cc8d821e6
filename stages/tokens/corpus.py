"""Corpus builder: a folder of scores (or music21's bundled corpus) → token shards + a JSON index.

Two passes, so an interrupted build resumes where it stopped:

1. **analyse** (parallel, one task per source file): read the file (MIDI by content; ABC with symusic,
   one piece per `X:` tune; kern/MusicXML through music21, which symusic cannot read), filter, and store
   each piece's MidiTok ids and raw control features (tokens/controls.py: PieceAnalysis) in
   `DIR/.work/<key>.safetensors`. A finished file is never redone; unreadable files are skipped and counted.
   That pass lives in tokens/corpus_analyse.py (reading one file: tokens/corpus_read.py).
2. **shard** (fast, in order): de-duplicate pieces by the hash of their quantised notes, split by a hash of
   the piece's name (deterministic: the same piece always lands in the same split, all its chunks with it),
   optionally calibrate the control classes on the train split, interleave controls, cut pieces at bars into
   sequences of at most `max_tokens`, and write `train|val|test-NNNNN.safetensors` shards (uint16 `tokens`,
   int64 `offsets`) and `index.json` last (docs/ARTIFACTS.md, v2m.corpus).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2m import artifacts, log
from v2m.artifacts import atomic_write_bytes
from v2m.config import to_dict
from v2m.errors import V2MError
from v2m.stages.tokens.controls import assemble_chunks, calibrate, split_bars
from v2m.stages.tokens.corpus_analyse import analyse_files, check_work_dir, load_work, work_key, worker_vocab
from v2m.stages.tokens.corpus_read import SCORE_EXTENSIONS
from v2m.stages.tokens.vocab import TokenizerSpec, new_vocab, spec_to_json


@dataclass(frozen=True)
class CorpusConfig:
    """Corpus build settings. Lengths in notes and bars; `max_tokens` per sequence (pieces are cut at bars)."""

    max_tokens: int = 2048
    min_notes: int = 8
    max_notes: int = 60_000
    max_bars: int = 2_000
    val_share: float = 0.05
    test_share: float = 0.05
    shard_tokens: int = 4_000_000
    file_timeout_s: int = 120


# ---------------------------------------------------------------- sources

def music21_sources() -> tuple[Path, list[tuple[str, Path]]]:
    """(root, [(source id, path)]) for every file of music21's bundled corpus, sorted."""
    import music21.corpus

    paths = sorted(Path(p) for p in music21.corpus.getPaths())
    root = Path(os.path.commonpath([str(p) for p in paths])) if paths else Path(".")
    return root, [(str(p.relative_to(root)), p) for p in paths]


def folder_sources(folder: Path) -> list[tuple[str, Path]]:
    """Score files under `folder` (by extension; MIDI is also recognised by content with any extension)."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            if p.suffix.lower() in SCORE_EXTENSIONS or _is_midi(p):
                out.append((str(p.relative_to(folder)), p))
    return out


def _is_midi(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"MThd"
    except OSError:
        return False


# ---------------------------------------------------------------- pass 2: shard

def split_of(name: str, config: CorpusConfig) -> str:
    """Deterministic split of a piece from a hash of its name."""
    u = int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) / float(1 << 48)
    return "val" if u < config.val_share else ("test" if u < config.val_share + config.test_share else "train")


class ShardWriter:
    """Buffers one split's sequences and writes `SPLIT-NNNNN.safetensors` shards of about `shard_tokens`."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, dtype):
        self.out_dir, self.split, self.shard_tokens, self.dtype = out_dir, split, shard_tokens, dtype
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.shards: list[str] = []
        self.pieces = 0
        self.tokens = 0

    def add(self, ids: list[int]) -> None:
        self.buffer.append(np.asarray(ids, dtype=self.dtype))
        self.buffered += len(ids)
        self.pieces += 1
        self.tokens += len(ids)
        if self.buffered >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        from safetensors.numpy import save

        if not self.buffer:
            return
        name = f"{self.split}-{len(self.shards):05d}.safetensors"
        offsets = np.cumsum([0] + [len(x) for x in self.buffer]).astype(np.int64)
        blob = save({"tokens": np.concatenate(self.buffer), "offsets": offsets},
                    # one metadata key: safetensors writes several in no fixed order, and shards must be byte-stable
                    metadata={"v2m": json.dumps({"format": "v2m.corpus.shard", "split": self.split})})
        path = self.out_dir / name
        # resumable: an identical shard from an interrupted run is kept as it is
        if not (path.exists() and path.read_bytes() == blob):
            atomic_write_bytes(path, blob)
        self.shards.append(name)
        self.buffer, self.buffered = [], 0


def build_corpus(sources: list[tuple[str, Path]], out_dir: Path, *, vocab=None, calibrate_to: Path | None = None,
                 config: CorpusConfig = CorpusConfig(), jobs: int = 2, keep_work: bool = False,
                 source_label: str = "", work_dir: Path | None = None) -> dict:
    """Build the corpus in `out_dir` and return the index artifact (also written as out_dir/index.json).

    `vocab` is the tokenizer to encode with; with `calibrate_to`, the control classes are calibrated on this
    corpus' train split instead and the new tokenizer JSON is written there (that is how presets/tokenizer.json
    is made). Interrupted builds resume: finished files in out_dir/.work are not redone.
    """
    started = time.perf_counter()
    spec = vocab.spec if vocab is not None else TokenizerSpec()
    work_dir = Path(work_dir) if work_dir is not None else out_dir / ".work"
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_json = spec_to_json(spec)
    check_work_dir(work_dir, spec_json)
    tasks = [(sid, str(path), str(work_dir), spec_json, config.min_notes, config.max_notes, config.file_timeout_s)
             for sid, path in sources]
    # biggest files first so the last worker does not finish alone with a long file
    tasks.sort(key=lambda t: -Path(t[1]).stat().st_size)
    analysed_now = analyse_files(tasks, jobs)
    stats = {"files": len(sources), "files_analysed_this_run": analysed_now, "files_read": 0, "files_skipped": Counter(), "pieces_found": 0,
             "pieces_skipped": Counter(), "duplicates": 0}
    metas = []
    for sid, _ in sources:
        from safetensors import safe_open

        path = work_dir / f"{work_key(sid)}.safetensors"
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads(f.metadata()["v2m.work"])
        metas.append((path, meta))
        if meta["error"]:
            stats["files_skipped"][meta["error"]] += 1
            continue
        stats["files_read"] += 1
        stats["pieces_skipped"].update(meta["skipped"])
        stats["pieces_found"] += len(meta["pieces"]) + sum(meta["skipped"].values())
    # de-duplicate and split from the metadata alone (the token data is streamed below)
    seen: set[str] = set()
    keep: dict[str, str] = {}
    for _, meta in metas:
        for piece in meta["pieces"]:
            if piece["hash"] in seen:
                stats["duplicates"] += 1
                continue
            seen.add(piece["hash"])
            keep[piece["name"]] = split_of(piece["name"], config)
    if calibrate_to is not None:
        vocab = _calibrate(metas, keep, spec, calibrate_to)
    if vocab is None:
        raise V2MError("build_corpus needs a tokenizer or calibrate_to")
    dtype = np.uint16 if len(vocab) < 65536 else np.int32
    writers = {s: ShardWriter(out_dir, s, config.shard_tokens, dtype) for s in ("train", "val", "test")}
    kept_pieces = Counter()
    bars_dropped = 0
    for path, meta in metas:
        if meta["error"] or not any(p["name"] in keep for p in meta["pieces"]):
            continue
        _, analyses = load_work(path)
        for analysis in analyses:
            split = keep.get(analysis.extra["name"])
            if split is None:
                continue
            chunks, dropped = assemble_chunks(_clip_bars(analysis, config.max_bars), vocab, config.max_tokens)
            bars_dropped += dropped
            kept_pieces[split] += 1
            for ids in chunks:
                writers[split].add(ids)
    for w in writers.values():
        w.flush()
    stats.update({
        "pieces_kept": sum(kept_pieces.values()), "bars_dropped_too_long": bars_dropped,
        "files_skipped": dict(stats["files_skipped"]), "pieces_skipped": dict(stats["pieces_skipped"]),
        "max_tokens": config.max_tokens, "jobs": jobs, "wall_time_s": round(time.perf_counter() - started, 1),
    })
    splits = {s: {"shards": w.shards, "pieces": kept_pieces[s], "sequences": w.pieces, "tokens": w.tokens}
              for s, w in writers.items()}
    data = {"tokenizer": vocab.to_json(), "tokenizer_hash": vocab.hash, "vocab_size": len(vocab), "special": vocab.special,
            "dtype": np.dtype(dtype).name, "splits": splits, "stats": stats}
    index = artifacts.make_artifact("v2m.corpus", data, stage="encode-tokens", config=to_dict(config),
                                    source={"name": source_label or str(out_dir), "files": len(sources)})
    artifacts.atomic_write_bytes(out_dir / "index.json", artifacts.dumps(index))
    if not keep_work:
        for p in work_dir.glob("*"):
            p.unlink()
        work_dir.rmdir()
    log.info(f"corpus: {stats['files_read']}/{len(sources)} files read, {stats['pieces_kept']} pieces, "
             f"{sum(s['tokens'] for s in splits.values()):,} tokens, vocab {len(vocab)}, {stats['wall_time_s']} s")
    return index


def _clip_bars(analysis, max_bars: int):
    """Absurdly long pieces keep only their first `max_bars` bars."""
    if len(analysis.bar_beats) <= max_bars:
        return analysis
    from dataclasses import replace

    bar_id = worker_vocab(json.dumps(_default_spec_json(), sort_keys=True)).bar_id
    bars = split_bars(analysis.base_ids, bar_id)[:max_bars]
    ids = [t for bar in bars for t in (bar_id, *bar)]
    beats = sum(analysis.bar_beats[:max_bars])
    return replace(analysis, base_ids=ids, bar_beats=analysis.bar_beats[:max_bars], bar_onsets=analysis.bar_onsets[:max_bars],
                   bar_seconds=analysis.bar_seconds[:max_bars],
                   beat_counts=analysis.beat_counts[:beats], phrase=analysis.phrase[:max_bars])


def _default_spec_json() -> dict:
    return spec_to_json(TokenizerSpec())


def _calibrate(metas: list, keep: dict[str, str], spec, calibrate_to: Path):
    """Control-class boundaries from the train split's pieces; writes the tokenizer JSON to `calibrate_to`."""
    train = []
    for path, meta in metas:
        if meta["error"] or not meta["pieces"]:
            continue
        _, analyses = load_work(path)
        for a in analyses:
            if keep.get(a.extra["name"]) == "train":
                a.base_ids = []  # only the features are needed; keeps memory flat on the full corpus
                train.append(a)
    vocab = new_vocab(calibrate(train), spec)
    artifacts.atomic_write_bytes(calibrate_to, (json.dumps(vocab.to_json(), indent=1, sort_keys=True) + "\n").encode())
    log.info(f"calibrated the control classes on {len(train)} train pieces → {calibrate_to} (hash {vocab.hash[:12]})")
    return vocab


def read_corpus(index_path: Path, split: str = "train"):
    """Yield the id sequences (numpy arrays) of one split; needs only numpy + safetensors."""
    from safetensors.numpy import load_file

    index = json.loads(Path(index_path).read_text())
    for shard in index["data"]["splits"][split]["shards"]:
        arrays = load_file(str(Path(index_path).parent / shard))
        tokens, offsets = arrays["tokens"], arrays["offsets"]
        for i in range(len(offsets) - 1):
            yield tokens[offsets[i]:offsets[i + 1]]
