"""The corpus range of evaluate's structure metrics (issue 17): how often real melodies repeat, vary and breathe.

Reads the test split of the training corpus — music21's bundled corpus, split exactly as `v2m encode-tokens
--source music21` splits it (stages/tokens/corpus.py `split_of` on the piece's name) — straight from the score
files (symusic for ABC, music21 for MusicXML & co., stages/tokens/corpus_read.py), keeps the pieces the corpus
keeps (≥ 8 notes), and measures every piece's melody (stages/evaluate/structure.py) twice: the whole piece and
its first `--excerpt` seconds cut at a bar line (what a clip's music is compared with). Prints a table (median,
10th–90th percentile) and the machine; with `--write` stores the ranges in presets/structure_range.json, which
evaluate's report shows beside the metrics.

Differences from the built corpus, on purpose (it takes ~40 min to build; this reads only the test pieces): the
corpus' de-duplication by content hash is not applied (a duplicate of a train piece may be counted), and a
non-ABC file holding several scores (an opus) is split by its file name alone.

    .venv/bin/python bench/structure_range.py [--jobs 2] [--limit N] [--excerpt 20] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RANGE_PATH = ROOT / "presets" / "structure_range.json"
TIMEOUT_S = 60  # CPU seconds per file, as the corpus builder's limit (a few music21 files parse for minutes)


def test_sources(limit: int | None) -> list[tuple[str, str, list[int] | None]]:
    """[(source id, path, ABC tune numbers in the test split or None for a whole file)] of the test split."""
    from v2m.stages.tokens.corpus import CorpusConfig, music21_sources, split_of
    from v2m.stages.tokens.corpus_read import SCORE_EXTENSIONS

    config = CorpusConfig()
    _, sources = music21_sources()
    out = []
    for source_id, path in sources:
        suffix = path.suffix.lower()
        if suffix not in SCORE_EXTENSIONS or suffix == ".rntxt":
            continue
        if suffix == ".abc":
            text = path.read_text(encoding="utf-8", errors="replace")
            tunes = [p for p in re.split(r"(?m)^(?=X:)", text) if p.startswith("X:")] or [text]
            numbers = [k for k in range(len(tunes)) if split_of(f"{source_id}#{k}", config) == "test"]
            if len(tunes) == 1:  # one tune: read_scores still names it #0
                numbers = [0] if split_of(f"{source_id}#0", config) == "test" else []
            if numbers:
                out.append((source_id, str(path), numbers))
        elif split_of(source_id, config) == "test":
            out.append((source_id, str(path), None))
    return out[:limit] if limit else out


def _read(source_id: str, path: str, numbers: list[int] | None) -> list[tuple[str, object]]:
    import symusic

    from v2m.stages.tokens.corpus_read import read_scores, silenced_fds

    if numbers is None:
        scores, _ = read_scores(Path(path))
        return [(source_id + name, score) for name, score in scores]
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    parts = re.split(r"(?m)^(?=X:)", text)
    header = parts[0] if not parts[0].startswith("X:") else ""
    tunes = [p for p in parts if p.startswith("X:")] or [text]
    out = []
    for k in numbers:
        try:
            with silenced_fds():
                out.append((f"{source_id}#{k}", symusic.Score.from_abc(header + tunes[k])))
        except Exception:
            pass  # an unreadable tune: the corpus skips it too
    return out


def measure(task: tuple[str, str, list[int] | None, float]) -> list[dict]:
    """Worker: the structure metrics of each test piece of one file, whole and excerpt ([] on failure)."""
    from v2m.stages.evaluate.structure import excerpt, structure_metrics

    source_id, path, numbers, seconds = task

    def _timeout(signum, frame):
        raise TimeoutError

    signal.signal(signal.SIGVTALRM, _timeout)
    signal.setitimer(signal.ITIMER_VIRTUAL, TIMEOUT_S)
    rows = []
    try:
        for name, score in _read(source_id, path, numbers):
            notes = sum(len(t.notes) for t in score.tracks if not t.is_drum)
            if notes < 8:
                continue
            whole, labels = structure_metrics(score)
            cut = excerpt(score, seconds)
            part, _ = structure_metrics(cut)
            rows.append({"name": name, "whole": whole, "excerpt": part, "breaths": breath_counts(cut),
                         "phrase_source": labels.get("phrase_source")})
    except Exception:  # unreadable or too slow: the corpus skips such files too
        return [{"name": source_id, "failed": True}]
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    return rows


def breath_counts(score) -> list[int]:
    """[phrase-start bars, of them after a breath, other bars, of them after a breath] (as phrase_rests counts)."""
    from v2m.stages.evaluate.structure import breath_before, melody_of, music_phrases

    melody = melody_of(score)
    if melody is None or melody.time.size == 0:
        return [0, 0, 0, 0]
    breath = breath_before(melody)
    phrase = np.array(music_phrases(melody), dtype=bool)[: len(breath)]
    first_bar = int(np.searchsorted(melody.bar_starts, melody.time[0], side="right") - 1)
    considered = np.arange(len(breath)) > max(first_bar, 0)
    at, other = considered & phrase, considered & ~phrase
    return [int(at.sum()), int(breath[at].sum()), int(other.sum()), int(breath[other].sum())]


def collection(name: str) -> str:
    return name.split("/")[0].split("#")[0]


def ranges(rows: list[dict], key: str) -> dict:
    from v2m.stages.evaluate.structure import STRUCTURE_METRICS

    out = {}
    for name in STRUCTURE_METRICS:
        values = np.array([r[key][name] for r in rows if np.isfinite(r[key].get(name, np.nan))])
        if values.size:
            p10, p25, median, p75, p90 = np.percentile(values, [10, 25, 50, 75, 90])
            out[name] = {"p10": round(float(p10), 4), "p25": round(float(p25), 4), "median": round(float(median), 4),
                         "p75": round(float(p75), 4), "p90": round(float(p90), 4), "mean": round(float(values.mean()), 4),
                         "zero_share": round(float(np.mean(values == 0)), 4), "pieces": int(values.size)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N test files (a quick look)")
    parser.add_argument("--excerpt", type=float, default=20.0, help="excerpt length in seconds")
    parser.add_argument("--write", action="store_true", help=f"write the ranges to {RANGE_PATH.relative_to(ROOT)}")
    args = parser.parse_args()
    import music21

    started = time.perf_counter()
    tasks = [(s, p, n, args.excerpt) for s, p, n in test_sources(args.limit)]
    with Pool(args.jobs) as pool:
        results = [row for rows in pool.imap_unordered(measure, tasks, chunksize=4) for row in rows]
    failed = [r["name"] for r in results if r.get("failed")]
    rows = sorted((r for r in results if not r.get("failed")), key=lambda r: r["name"])
    wall = time.perf_counter() - started
    whole, part = ranges(rows, "whole"), ranges(rows, "excerpt")
    print(f"# structure_range — {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, music21 {music21.__version__}; {len(tasks)} test files, "
          f"{len(rows)} pieces, {len(failed)} files unreadable or timed out; {wall:.0f} s wall, --jobs {args.jobs}")
    print("\n| metric | whole piece: median [p10–p90] | first %g s: median [p10–p90] | first %g s: [p25–p75] "
          "| first %g s: share at 0 | pieces |" % (args.excerpt, args.excerpt, args.excerpt))
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in part.items():
        w = whole.get(name, {})
        print(f"| {name} | {w.get('median', float('nan')):.3f} [{w.get('p10', float('nan')):.3f}–{w.get('p90', float('nan')):.3f}] "
              f"| {r['median']:.3f} [{r['p10']:.3f}–{r['p90']:.3f}] | [{r['p25']:.3f}–{r['p75']:.3f}] "
              f"| {r['zero_share']:.2f} | {r['pieces']} |")
    counts = np.array([r["breaths"] for r in rows]).sum(axis=0)
    pooled = {"phrase_start_rest": round(counts[1] / max(counts[0], 1), 4), "other_bar_rest": round(counts[3] / max(counts[2], 1), 4)}
    print(f"\npooled over the first {args.excerpt:g} s of every piece: a breath before {counts[1]} of {counts[0]} phrase-start bars "
          f"({pooled['phrase_start_rest']:.3f}), before {counts[3]} of {counts[2]} other bars ({pooled['other_bar_rest']:.3f})")
    by_collection: dict[str, list[dict]] = {}
    for r in rows:
        by_collection.setdefault(collection(r["name"]), []).append(r)
    print("\n| collection | pieces | repeated-or-varied, first %g s: median | melody notes per beat: median |" % args.excerpt)
    print("|---|---:|---:|---:|")
    for name, group in sorted(by_collection.items(), key=lambda kv: -len(kv[1])):
        rv = np.nanmedian([g["excerpt"]["bar_repeated_or_varied"] for g in group])
        nb = np.nanmedian([g["excerpt"]["melody_notes_per_beat"] for g in group])
        print(f"| {name} | {len(group)} | {rv:.3f} | {nb:.3f} |")
    if args.write:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        data = {"format": "v2m.reference_range", "version": 1,
                "about": "the corpus range of evaluate's structure metrics (stages/evaluate/structure.py): "
                         "10th, 25th, 50th (median), 75th, 90th percentile, mean and the share of pieces at exactly 0, "
                         "over the pieces of music21's corpus in the "
                         "training corpus' test split; `excerpt` = the first excerpt_seconds of each piece (what the "
                         "report compares with), `whole` = whole pieces",
                "made_by": f"bench/structure_range.py --excerpt {args.excerpt:g}{' --limit %d' % args.limit if args.limit else ''}"
                           f" at v2m {commit or 'unknown'}",
                "corpus": {"source": "music21 corpus", "music21": music21.__version__, "split": "test",
                           "files": len(tasks), "pieces": len(rows), "files_failed": len(failed)},
                "excerpt_seconds": args.excerpt, "ranges": {"excerpt": part, "whole": whole},
                "pooled_excerpt": {"phrase_start_bars": int(counts[0]), "other_bars": int(counts[2]), **pooled}}
        from v2m.artifacts import atomic_write_bytes

        atomic_write_bytes(RANGE_PATH, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
        print(f"\nwritten: {RANGE_PATH.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
