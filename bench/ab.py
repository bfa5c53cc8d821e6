"""A benchmark script run on two commits side by side: rounds alternate between the trees, the table rows each run
prints are matched by name, and the medians are compared as head ÷ base.

Why: a refactor must leave speed where it was, and this machine is shared and noisy — figures from different
runs or hours do not compare; alternating rounds in one run do. Each commit's tree is laid out as its own package
map says (bench/same_bytes.py's `tree_at`) and runs its own copy of the script.

    python bench/ab.py --base 9271277 -- bench/decode.py --threads 1 --repeats 3
    python bench/ab.py --base HEAD~3 --rounds 5 -- bench/run_speed.py

Rows are the markdown table rows the script prints (`| name | number | ...`: the first number after the name is
compared) and lines `what: median X`. Prints the machine, the commands and one row per matched name.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from same_bytes import REPO, search_path, tree_at  # noqa: E402

ROW = re.compile(r"^\|\s*([^|]*?)\s*\|\s*\**([-+]?[\d,]*\.?\d+)")
MEDIAN = re.compile(r"^(.+?): median ([\d.]+)")  # a figure printed as "what: median X ..." (decode.py's --help time)


def rows(text: str) -> dict[str, float]:
    """Table rows of a benchmark's output: name → its first number (thousands separators dropped)."""
    found = {}
    for line in text.splitlines():
        match = ROW.match(line.strip()) or MEDIAN.match(line.strip())
        if match and not set(match.group(1)) <= set("-: "):
            found[match.group(1)] = float(match.group(2).replace(",", ""))
    return found


def run(layout: Path, source: Path, argv: list[str]) -> str:
    script, *args = argv
    env = {**os.environ, "PYTHONPATH": search_path(layout)}
    proc = subprocess.run([sys.executable, str(source / script), *args], cwd=source, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed on {source}: {proc.stderr[-800:]}")
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (or a folder holding its tree)")
    parser.add_argument("--head", default=None, help="default: the working tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS]: a bench script, relative to the repo")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    work = Path(tempfile.mkdtemp(prefix="v2m-ab-"))
    try:
        trees = {}
        for name, rev in (("base", args.base), ("head", args.head)):
            layout = tree_at(rev, work)
            trees[name] = (layout, (Path(rev).resolve() if Path(rev).is_dir() else work / f"src-{rev}") if rev else REPO)
        results: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
        for round_ in range(args.rounds):
            for name in (("base", "head") if round_ % 2 == 0 else ("head", "base")):
                for row, value in rows(run(*trees[name], command)).items():
                    results[name].setdefault(row, []).append(value)
        print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}; load average {os.getloadavg()[0]:.1f}")
        print(f"command: {' '.join(command)}; base {args.base}, head {args.head or 'working tree'}; "
              f"medians of {args.rounds} alternating rounds\n")
        print("| row | base | head | head ÷ base |\n|---|---:|---:|---:|")
        for row, base_values in results["base"].items():
            head_values = results["head"].get(row)
            if not head_values:
                continue
            base, head = statistics.median(base_values), statistics.median(head_values)
            ratio = f"{head / base:.2f}" if base else "—"
            print(f"| {row} | {base:,.4g} | {head:,.4g} | {ratio} |")
        return 0
    finally:
        for rev in {args.base, args.head} - {None}:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / f"src-{rev}")],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
