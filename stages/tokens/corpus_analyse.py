"""Pass 1 of the corpus build: analyse each source file once and keep the result on disk.

One task per file, run in worker processes (`analyse_file` stays at module level so a spawned worker can
import it): read the file (tokens/corpus_read.py), filter its pieces, and store each piece's MidiTok ids and raw
control features (tokens/controls.py: PieceAnalysis) in `WORK/<key>.safetensors`. A finished file is never
redone, so an interrupted build resumes where it stopped; a .work folder made with another tokenizer spec
or analysis version is cleared first. Pass 2 (tokens/corpus.py) reads the results back with `load_work`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

from v2m import log
from v2m.artifacts import atomic_write_bytes
from v2m.stages.tokens.controls import PieceAnalysis, analyse_score
from v2m.stages.tokens.corpus_read import SkipFile, read_scores
from v2m.stages.tokens.vocab import new_vocab, spec_from_json

ANALYSE_VERSION = 2  # bump when the per-file analysis changes, so old .work files are redone


def work_key(source_id: str) -> str:
    return hashlib.sha1(source_id.encode()).hexdigest()[:16]


def analyse_file(task: tuple[str, str, str, dict, int, int, int]) -> dict:
    """Worker: read one file, analyse its pieces, store them in the .work folder. Returns a summary."""
    source_id, path_str, work_dir, spec_json, min_notes, max_notes, timeout = task

    out_path = Path(work_dir) / f"{work_key(source_id)}.safetensors"
    if out_path.exists():
        return {"source": source_id, "cached": True}
    vocab = worker_vocab(json.dumps(spec_json, sort_keys=True))
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


@functools.cache
def worker_vocab(spec_key: str):
    """The MidiTok-only tokenizer for a spec (as sorted JSON), built once per process (a documented cache)."""
    # the analysis only needs MidiTok's part; class boundaries are applied in pass 2
    return new_vocab({"n_density": 1, "tempo_bounds_bpm": []}, spec_from_json(json.loads(spec_key)))


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


def check_work_dir(work_dir: Path, spec_json: dict) -> None:
    """A .work folder made with another tokenizer spec or analysis version is stale: clear it."""
    stamp = work_dir / "SPEC.json"
    want = json.dumps({"spec": spec_json, "version": ANALYSE_VERSION}, sort_keys=True)
    if stamp.exists() and stamp.read_text() != want:
        log.warn(f"{work_dir}: made with another tokenizer spec; starting over")
        for p in work_dir.glob("*.safetensors"):
            p.unlink()
    stamp.write_text(want)


def analyse_files(tasks: list, jobs: int) -> int:
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
