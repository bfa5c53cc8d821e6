"""Fuzz every artifact reader through the command line: N mutants per kind → how many were done, refused in one line,
or ended otherwise (internal errors, hangs, bad refusals, clobbered inputs — each a finding, listed).

  python bench/fuzz_artifacts.py                 # 10⁴ mutants per kind, 2 worker processes
  python bench/fuzz_artifacts.py --count 500 --kinds tokens

Each mutant is a valid artifact (tests/fuzz.py: make_seeds, made by v2m's own stages) with 1–3 structural edits
(a field replaced by a value of another type, out of range, non-finite, huge, a path; deleted; scaled; a list
reversed, shuffled, cut, flattened, grown) or, one time in ten, damaged bytes. It is written into a fresh folder
and read by the command that takes it — rhythm: `encode-tokens R -o OUT`, controls: `evaluate C song.mid -o OUT`,
tokens: `decode T -o OUT.mid`, report: `evaluate REP song.mid -o OUT`, corpus: `evaluate --model tiny --corpus DIR
-o OUT` with a mutated index.json beside the shards — through `v2m.cli.main.main` in the worker process, with a
time limit (a hang). Mutants are seeded (kind, index): the same run finds the same things.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz import KINDS, make_seeds, mutate, run_mutant

FINDINGS = ("internal", "hang", "bad-refusal", "no-output", "clobbered")


def chunk(args) -> tuple[str, collections.Counter, collections.Counter, dict, float]:
    """Run mutants [start, stop) of one kind → (kind, outcome counts, refusal fields, findings by message, seconds)."""
    kind, start, stop, seeds_dir, timeout = args
    import torch

    torch.set_num_threads(1)
    seeds = make_seeds(Path(seeds_dir) / f"seeds-{os.getpid()}")  # the same bytes in every worker (seeded)
    seed = seeds[kind]
    counts, fields, findings = collections.Counter(), collections.Counter(), {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="v2m-fuzz-") as tmp:
        for i in range(start, stop):
            rng = random.Random(f"{kind}:{i}")
            data = mutate(seed.artifact, rng, edits=rng.choice((1, 1, 2, 3)))
            work = Path(tmp) / f"{i}"
            if kind == "corpus":
                shutil.copytree(Path(seeds_dir) / f"seeds-{os.getpid()}" / "corpus", work)
            else:
                work.mkdir()
            outcome = run_mutant(seed, data, work, timeout=timeout)
            counts[outcome.kind] += 1
            if outcome.kind == "refused":
                # what was refused: the field named, or the kind of problem
                body = outcome.message.removeprefix("v2m: error: ")
                parts = body.split(": ")
                fields[parts[1].split("[")[0].split(".")[1] if len(parts) > 2 and parts[1].startswith("data.")
                       else (parts[1] if len(parts) > 2 else "other")[:40]] += 1
            elif outcome.kind in FINDINGS:
                findings.setdefault(outcome.message[:200], (outcome.kind, i))
            shutil.rmtree(work, ignore_errors=True)
    return kind, counts, fields, findings, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="mutants per kind")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a mutant counts as a hang")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    per = max(1, args.count // (4 * args.jobs))
    tasks = []
    with tempfile.TemporaryDirectory(prefix="v2m-fuzz-seeds-") as seeds_dir:
        for kind in kinds:
            tasks += [(kind, a, min(a + per, args.count), seeds_dir, args.timeout) for a in range(0, args.count, per)]
        started = time.perf_counter()
        totals = {k: collections.Counter() for k in kinds}
        fields = {k: collections.Counter() for k in kinds}
        findings: dict[str, dict] = {k: {} for k in kinds}
        seconds = collections.Counter()
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for kind, counts, refused, found, took in pool.imap_unordered(chunk, tasks):
                totals[kind].update(counts)
                fields[kind].update(refused)
                findings[kind].update(found)
                seconds[kind] += took
                done = sum(sum(c.values()) for c in totals.values())
                print(f"  {done}/{len(kinds) * args.count} mutants", file=sys.stderr, flush=True)
        wall = time.perf_counter() - started
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.jobs} worker processes; wall {wall:.0f} s")
    print()
    print("| kind | mutants | done (exit 0) | refused in one line | internal errors | hangs | bad refusals | "
          "inputs changed | ms per mutant |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in kinds:
        c = totals[kind]
        n = sum(c.values())
        print(f"| {kind} | {n} | {c['accepted']} | {c['refused']} | {c['internal']} | {c['hang']} | "
              f"{c['bad-refusal'] + c['no-output']} | {c['clobbered']} | {1000 * seconds[kind] / max(n, 1):.0f} |")
    print()
    for kind in kinds:
        top = ", ".join(f"{field} {count}" for field, count in fields[kind].most_common(8))
        print(f"{kind}: refusals by field: {top}")
    for kind in kinds:
        for message, (what, index) in findings[kind].items():
            print(f"FINDING {kind} #{index} {what}: {message}")


if __name__ == "__main__":
    main()
