"""Quantize a model several ways and gate each against the float model on a corpus — a sweep file, for CI.

SWEEP.toml lists rows: what `v2m quantize` takes (scheme, method, group,
asym, alpha, damp, act_order, block, budget_bits, rounds, seed, calib_samples,
calib_length, kernel) and the `--fail-if` gates of `v2m evaluate` (gates =
["nll_delta>0.03", "kl>0.01"]); a [defaults] table applies to every row.
examples/sweep.toml is a commented sample; `v2m quantize --list` shows what
combines.

Each row is written to OUT/ROW.safetensors and scored against the float
model on the same tokens: size, NLL Δ, KL, decode speed. OUT/report.json is
one v2m.report with every row, OUT/summary.md a Markdown table (for a CI job
summary or a PR comment), and --junit FILE JUnit XML with each gate a test
case. Progress (rows done / total) goes to stderr.

Scored split: --split auto (default) takes test, else val, else holds out
every n-th piece of the calibration split (--holdout) for scoring, so a small
corpus made from your own MIDI folder works; calibration and scoring never
share a piece.

Exit status as `evaluate --fail-if`: 0 every gate held, 3 a gate failed
(named in the table and the XML), 1 a row could not run (the others still
run) or a bad sweep file.

Examples:

  v2m sweep examples/sweep.toml --model presets/default.safetensors --corpus corpus/ -o sweep/

  v2m sweep sweep.toml --model model.safetensors --corpus mine/ -o out/ --junit out/junit.xml --rows w4-gptq,w2-decoupleq

  cat sweep/summary.md >> "$GITHUB_STEP_SUMMARY"
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import log
from v2m.cli.common import Force


def command(
    sweep_file: Annotated[str, typer.Argument(help="Sweep file (TOML): [[row]] tables, see examples/sweep.toml.",
                                              show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Output folder: ROW.safetensors per row, report.json, "
                                                               "summary.md.", show_default=False)],
    model: Annotated[Optional[str], typer.Option("--model", help="Float model to quantize (default: the file's 'model').")] = None,
    corpus: Annotated[Optional[str], typer.Option("--corpus", help="Token corpus for calibration and scoring "
                                                                   "(default: the file's 'corpus').")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Scored split: auto, test, val, train "
                                                                 "(default: the file's, else auto).")] = None,
    calib_split: Annotated[Optional[str], typer.Option("--calib-split", help="Calibration split (default: the file's, "
                                                                             "else train).")] = None,
    holdout: Annotated[Optional[float], typer.Option("--holdout", help="Share of the pieces held out for scoring when "
                                                                       "the scored split is the calibration split "
                                                                       "(default 0.2).")] = None,
    rows: Annotated[Optional[str], typer.Option("--rows", help="Comma-separated row names to run (default: all).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Tokens scored for NLL/KL (default 32768).")] = None,
    speed: Annotated[Optional[bool], typer.Option("--speed/--no-speed", help="Measure decode speed against the float "
                                                                             "model (default on).", show_default=False)] = None,
    junit: Annotated[Optional[str], typer.Option("--junit", help="Also write JUnit XML (each gate a test case).")] = None,
    force: Force = False,
) -> None:
    import dataclasses

    from v2m.artifacts import atomic_write_bytes, check_output, dumps
    from v2m.errors import V2MError
    from v2m.stages.evaluate.ci import junit as junit_xml
    from v2m.stages.evaluate.ci import markdown
    from v2m.stages.sweep import check_outcome, read_sweep, run_sweep, select_rows

    sweep = read_sweep(sweep_file)
    overrides = {k: v for k, v in {"split": split, "calib_split": calib_split, "holdout": holdout,
                                   "max_tokens": max_tokens, "speed": speed}.items() if v is not None}
    sweep = dataclasses.replace(select_rows(sweep, rows.split(",") if rows else None), **overrides,
                                settings={**sweep.settings, **overrides})
    model, corpus = model or sweep.model, corpus or sweep.corpus
    if not model or not corpus:
        raise V2MError(f"the sweep needs a {'model' if not model else 'corpus'}",
                       "pass --model M.safetensors --corpus DIR/ (or set model/corpus in the sweep file)")
    out = Path(output)
    report_path, summary_path = out / "report.json", out / "summary.md"
    for path in (report_path, summary_path, junit):
        check_output(path, force, inputs=[sweep_file, model, corpus])

    with log.progress("sweep", total=len(sweep.rows), unit="rows") as advance:
        def progress(done: int, total: int, name: str) -> None:
            if done:
                advance(1)
            if name:
                log.info(f"[{done + 1}/{total}] {name}: quantizing and scoring")

        report = run_sweep(sweep, model, corpus, output, force=force, progress=progress)
    atomic_write_bytes(report_path, dumps(report))
    table = markdown(report["data"])
    atomic_write_bytes(summary_path, table.encode())
    if junit:
        atomic_write_bytes(junit, junit_xml(report["data"]).encode())
    if not log.quiet():
        log.console().print(table, markup=False, highlight=False)
    log.info(f"wrote {report_path}, {summary_path}" + (f", {junit}" if junit else ""))
    check_outcome(report)
