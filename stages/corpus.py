"""Corpus builder: a folder of scores (or music21's bundled corpus) → token shards + a JSON index.

Two passes, so an interrupted build resumes where it stopped:

1. **analyse** (parallel, one task per source file): read the file (MIDI by content; ABC with symusic,
   one piece per `X:` tune; kern/MusicXML through music21, which symusic cannot read), filter, and store
   each piece's MidiTok ids and raw control features (stages/controls.PieceAnalysis) in
   `DIR/.work/<key>.safetensors`. A finished file is never redone; unreadable files are skipped and counted.
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
import re
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2m import log
from v2m.errors import V2MError

MIDI_EXTENSIONS = {".mid", ".midi", ".kar", ".smf"}
MUSIC21_EXTENSIONS = {".krn", ".mxl", ".xml", ".musicxml", ".mei", ".md", ".capx"}
ANALYSIS_EXTENSIONS = {".rntxt"}  # roman-numeral analyses: harmony outlines of pieces already in the corpus
SCORE_EXTENSIONS = MIDI_EXTENSIONS | MUSIC21_EXTENSIONS | ANALYSIS_EXTENSIONS | {".abc"}
ANALYSE_VERSION = 2  # bump when the per-file analysis changes, so old .work files are redone


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


# ---------------------------------------------------------------- reading one file

@contextmanager
def silenced_fds():
    """Send the C-level stdout/stderr to /dev/null: symusic's ABC parser prints warnings there, and stdout
    must carry nothing but the artifact."""
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def read_scores(path: Path, limit: int | None = None) -> tuple[list[tuple[str, object]], Counter]:
    """A source file → ([(piece name, symusic.Score)], skipped-piece reasons). Raises on unreadable files.
    `limit` reads only the first tunes of a many-tune ABC file."""
    import symusic

    skipped: Counter = Counter()
    suffix = path.suffix.lower()
    data = path.read_bytes()
    if data[:4] == b"MThd":
        return [("", symusic.Score.from_midi(data))], skipped
    if suffix == ".abc":
        text = data.decode("utf-8", errors="replace")
        parts = re.split(r"(?m)^(?=X:)", text)
        header = parts[0] if not parts[0].startswith("X:") else ""
        tunes = ([p for p in parts if p.startswith("X:")] or [text])[:limit]
        out = []
        for number, tune in enumerate(tunes):
            try:
                with silenced_fds():
                    out.append((f"#{number}", symusic.Score.from_abc(header + tune)))
            except Exception:
                skipped["unreadable tune"] += 1
        return out, skipped
    if suffix == ".krn":
        from v2m.stages.kern import Unsupported, read_kern

        try:
            return [("", read_kern(data.decode("utf-8", errors="replace")))], skipped
        except Unsupported:
            pass  # spine splits and the like: music21 below
    if suffix in MUSIC21_EXTENSIONS:
        return _read_music21(path), skipped
    if suffix in MIDI_EXTENSIONS:
        raise SkipFile("not MIDI (no MThd header)")
    if suffix in ANALYSIS_EXTENSIONS:
        raise SkipFile("roman-numeral analysis, not a score")
    raise SkipFile(f"unsupported format {suffix}")


class SkipFile(Exception):
    """A file that is deliberately not read; the message is the reason counted in the stats."""


def _read_music21(path: Path) -> list[tuple[str, object]]:
    import music21
    import symusic
    from music21.midi import translate

    # forceSource/storePickle: never read or write music21's pickle cache
    parsed = music21.converter.parse(str(path), forceSource=True, storePickle=False)
    scores = list(parsed.scores) if isinstance(parsed, music21.stream.Opus) else [parsed]
    out = []
    for number, score in enumerate(scores):
        midi = translate.streamToMidiFile(score).writestr()
        out.append((f"#{number}" if len(scores) > 1 else "", symusic.Score.from_midi(midi)))
    return out


# ---------------------------------------------------------------- pass 1: analyse

def work_key(source_id: str) -> str:
    return hashlib.sha1(source_id.encode()).hexdigest()[:16]


def analyse_file(task: tuple[str, str, str, dict, int, int, int]) -> dict:
    """Worker: read one file, analyse its pieces, store them in the .work folder. Returns a summary."""
    source_id, path_str, work_dir, spec_json, min_notes, max_notes, timeout = task

    out_path = Path(work_dir) / f"{work_key(source_id)}.safetensors"
    if out_path.exists():
        return {"source": source_id, "cached": True}
    vocab = _worker_vocab(json.dumps(spec_json, sort_keys=True))
    skipped: Counter = Counter()
    pieces, analyses = [], []
    import signal

    def _timeout(signum, frame):
        raise TimeoutError(f"took more than {timeout} s of CPU time")

    # a CPU-time limit (not wall time), so which files time out does not depend on the machine's load
    signal.signal(signal.SIGVTALRM, _timeout)
    signal.setitimer(signal.ITIMER_VIRTUAL, timeout)
    try:
        scores, skipped = read_scores(Path(path_str))
        for name, score in scores:
            from v2m.stages.controls import analyse_score

            try:
                analysis = analyse_score(score, vocab)
            except Exception:
                skipped["unreadable piece"] += 1
                continue
            reason = _filter(analysis, min_notes, max_notes)
            if reason:
                skipped[reason] += 1
                continue
            analyses.append(analysis)
            pieces.append({"name": source_id + name, "tempo_qpm": round(analysis.tempo_qpm, 3), "mode": analysis.mode,
                           "mean_pitch": round(analysis.mean_pitch, 2), "notes": analysis.notes, "hash": analysis.content_hash})
        error = None
    except TimeoutError:
        error = f"timeout ({timeout} s CPU)"
    except SkipFile as e:
        error = str(e)
    except Exception as e:  # unreadable: counted by reason, never a crash
        error = f"unreadable ({type(e).__name__})"
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    meta = {"source": source_id, "version": ANALYSE_VERSION, "error": error, "pieces": pieces, "skipped": dict(skipped)}
    _save_work(out_path, analyses, meta)
    return {"source": source_id, "cached": False, "error": error, "pieces": len(pieces)}


_VOCAB_CACHE: dict = {}


def _worker_vocab(spec_key: str):
    from v2m.stages.tokens import new_vocab, spec_from_json

    if spec_key not in _VOCAB_CACHE:
        # the analysis only needs MidiTok's part; class boundaries are applied in pass 2
        _VOCAB_CACHE[spec_key] = new_vocab({"n_density": 1, "tempo_bounds_bpm": []}, spec_from_json(json.loads(spec_key)))
    return _VOCAB_CACHE[spec_key]


def _filter(analysis, min_notes: int, max_notes: int) -> str | None:
    if analysis.notes == 0:
        return "no notes"
    if analysis.notes < min_notes:
        return f"fewer than {min_notes} notes"
    if analysis.notes > max_notes:
        return f"more than {max_notes} notes"
    return None


def _save_work(path: Path, analyses: list, meta: dict) -> None:
    from safetensors.numpy import save

    from v2m.artifacts import atomic_write_bytes

    def cat(key, dtype):
        arrays = [np.asarray(getattr(a, key), dtype=dtype) for a in analyses]
        offsets = np.cumsum([0] + [len(x) for x in arrays]).astype(np.int64)
        return (np.concatenate(arrays) if arrays else np.zeros(0, dtype)), offsets

    tensors = {}
    for key, dtype in (("base_ids", np.int32), ("bar_beats", np.int32), ("bar_onsets", np.int32),
                       ("beat_counts", np.int32), ("phrase", np.uint8), ("bar_seconds", np.float64)):
        values, offsets = cat(key, dtype)
        tensors[key], tensors[key + "_offsets"] = values, offsets
    atomic_write_bytes(path, save(tensors, metadata={"v2m.work": json.dumps(meta)}))


def load_work(path: Path) -> tuple[dict, list]:
    """A .work file → (its metadata, [PieceAnalysis])."""
    from safetensors import safe_open

    from v2m.stages.controls import PieceAnalysis

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["v2m.work"])
        arrays = {key: f.get_tensor(key) for key in f.keys()}

    def piece(key, i):
        off = arrays[key + "_offsets"]
        return arrays[key][off[i]:off[i + 1]].tolist()

    analyses = [PieceAnalysis(piece("base_ids", i), piece("bar_beats", i), piece("bar_onsets", i), piece("beat_counts", i),
                              [bool(x) for x in piece("phrase", i)], p["tempo_qpm"], p["mode"], p["mean_pitch"], p["notes"],
                              p["hash"], {"name": p["name"]}, piece("bar_seconds", i))
                for i, p in enumerate(meta["pieces"])]
    return meta, analyses


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

        from v2m.artifacts import atomic_write_bytes

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
    from v2m import artifacts
    from v2m.stages.tokens import TokenizerSpec, spec_to_json

    started = time.perf_counter()
    spec = vocab.spec if vocab is not None else TokenizerSpec()
    work_dir = Path(work_dir) if work_dir is not None else out_dir / ".work"
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_json = spec_to_json(spec)
    _check_work_dir(work_dir, spec_json)
    tasks = [(sid, str(path), str(work_dir), spec_json, config.min_notes, config.max_notes, config.file_timeout_s)
             for sid, path in sources]
    # biggest files first so the last worker does not finish alone with a long file
    tasks.sort(key=lambda t: -Path(t[1]).stat().st_size)
    analysed_now = _run_tasks(tasks, jobs)
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
    from v2m.stages.controls import assemble_chunks

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
    from v2m.config import to_dict

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

    from v2m.stages.controls import split_bars

    bar_id = _worker_vocab(json.dumps(_default_spec_json(), sort_keys=True)).bar_id
    bars = split_bars(analysis.base_ids, bar_id)[:max_bars]
    ids = [t for bar in bars for t in (bar_id, *bar)]
    beats = sum(analysis.bar_beats[:max_bars])
    return replace(analysis, base_ids=ids, bar_beats=analysis.bar_beats[:max_bars], bar_onsets=analysis.bar_onsets[:max_bars],
                   bar_seconds=analysis.bar_seconds[:max_bars],
                   beat_counts=analysis.beat_counts[:beats], phrase=analysis.phrase[:max_bars])


def _default_spec_json() -> dict:
    from v2m.stages.tokens import TokenizerSpec, spec_to_json

    return spec_to_json(TokenizerSpec())


def _check_work_dir(work_dir: Path, spec_json: dict) -> None:
    """A .work folder made with another tokenizer spec or analysis version is stale: clear it."""
    stamp = work_dir / "SPEC.json"
    want = json.dumps({"spec": spec_json, "version": ANALYSE_VERSION}, sort_keys=True)
    if stamp.exists() and stamp.read_text() != want:
        log.warn(f"{work_dir}: made with another tokenizer spec; starting over")
        for p in work_dir.glob("*.safetensors"):
            p.unlink()
    stamp.write_text(want)


def _run_tasks(tasks: list, jobs: int) -> int:
    """Analyse files in `jobs` processes with a progress bar; finished files (in .work) are skipped.
    Returns how many files were analysed now."""
    todo = [t for t in tasks if not (Path(t[2]) / f"{work_key(t[0])}.safetensors").exists()]
    if len(todo) < len(tasks):
        log.info(f"resuming: {len(tasks) - len(todo)} of {len(tasks)} files already analysed")
    with log.progress("analysing", total=len(todo), unit="files") as advance:
        if jobs <= 1 or len(todo) <= 1:
            for task in todo:
                analyse_file(task)
                advance()
            return len(todo)
        import multiprocessing

        # spawn: workers start clean (no inherited threads from rich or a half-imported torch)
        with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=200) as pool:
            for _ in pool.imap_unordered(analyse_file, todo, chunksize=1):
                advance()
    return len(todo)


def _calibrate(metas: list, keep: dict[str, str], spec, calibrate_to: Path):
    """Control-class boundaries from the train split's pieces; writes the tokenizer JSON to `calibrate_to`."""
    from v2m import artifacts
    from v2m.stages.controls import calibrate
    from v2m.stages.tokens import new_vocab

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
