"""Score music against a video's rhythm, describe music, or measure a model; gate CI on the results.

What is measured depends on what you give it (recognised by content):

  RHYTHM.json MUSIC: rhythm agreement. beat_f1: the music's beats vs the
  video's (±70 ms; from the tempo map for MIDI/tokens, tracked in a WAV
  by a DP beat tracker; the label music_beats says which); onset_f1: every note onset
  vs the video's beats; BCS/BHS, Beat Align Score (onsets), tempo relation,
  cut hits; plus music statistics for MIDI/tokens, and control accuracy
  when controls are given or carried.

  MUSIC: music statistics (MIDI or tokens). Pitch-class entropy, scale and
  groove consistency, empty bars, polyphony, pitch range, note density; the
  melody's structure (repeated/transposed/varied bars, motif recurrence,
  notes per beat, breaths before phrase starts) beside the corpus range.

  FOLDER/: one row per name (NAME.rhythm.json + NAME.mid / .wav /
  .tokens.json, as `v2m run` writes them) and a summary: mean, median, worst.
  Onsets come from the MIDI; with a NAME.wav beside it, beats are heard in it.

  --model M --corpus C: NLL/token, perplexity, KL vs --reference,
  parameters, size on disk, prefill and decode tokens/s.

MUSIC is a MIDI file, a WAV (onsets detected) or a v2m.tokens artifact.
The v2m.report artifact goes to stdout (or -o), a table to stderr.
--fail-if exits 3 and names the failed gate.

Examples:

  v2m evaluate clip.rhythm.json clip.mid

  v2m evaluate clip.rhythm.json clip.wav --plot clip.png

  v2m evaluate song.mid --json

  v2m evaluate out/ --fail-if "beat_f1<0.8,bhs.worst<0.5" -o report.json

  v2m evaluate --model q.safetensors --corpus corpus/ --reference model.safetensors --fail-if "nll_delta>0.01"
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import log
from v2m.cli.common import Force, Output


def command(
    inputs: Annotated[Optional[list[str]], typer.Argument(help="A rhythm artifact and music (MIDI, WAV, tokens), "
                                                               "music alone, or one folder.", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model checkpoint to measure (needs --corpus).")] = None,
    corpus: Annotated[Optional[str], typer.Option("--corpus", help="Token corpus folder (v2m encode-tokens ... -o DIR/).")] = None,
    split: Annotated[str, typer.Option("--split", help="Corpus split to score.")] = "test",
    reference: Annotated[Optional[str], typer.Option("--reference", help="Reference model for KL and NLL/size/speed "
                                                                          "ratios (usually the float model).")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens scored for NLL/KL.")] = 32768,
    context: Annotated[int, typer.Option("--context", help="Window length in tokens (0 = model's, at most 512).")] = 0,
    speed: Annotated[bool, typer.Option("--speed/--no-speed", help="Measure prefill/decode tokens/s.")] = True,
    device: Annotated[str, typer.Option("--device", help="Device for model mode (cpu, cuda).")] = "cpu",
    kernel: Annotated[str, typer.Option("--kernel", help="Kernel for quantized models (see v2m quantize).")] = "auto",
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer JSON for tokens inputs "
                                                                         "(default: presets/tokenizer.json).")] = None,
    output: Output = "-",
    force: Force = False,
    as_json: Annotated[bool, typer.Option("--json", help="Write plain metrics JSON instead of the v2m.report artifact.")] = False,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write a PNG: video envelope, beats and cuts above "
                                                               "the music's onsets.")] = None,
    fail_if: Annotated[Optional[str], typer.Option("--fail-if", help="Comma-separated gates that FAIL the run (exit 3), "
                                                                    "e.g. \"beat_f1<0.8,nll_delta>0.01\"; in folders "
                                                                    "METRIC.worst / .median (default .mean).")] = None,
) -> None:
    from v2m.artifacts import check_output, dumps, write_output
    from v2m.stages.evaluate.modes import check_outcome, evaluate_request

    sources = [*(inputs or []), model, corpus, reference, tokenizer]
    if corpus is not None:
        sources.append(Path(corpus) / "index.json")
    check_output(output, force, inputs=sources)
    if plot is not None:
        check_output(plot, force, inputs=[*sources, output])
    report = evaluate_request(list(inputs or []), model=model, corpus=corpus, split=split, reference=reference,
                              max_tokens=max_tokens, context=context, speed=speed, device=device, kernel=kernel,
                              tokenizer=tokenizer, plot=plot, fail_if=fail_if, diffusion=_diffusion)
    write_output(dumps(report.data if as_json else report.artifact()), output, force)
    _table(report.data)
    check_outcome(report)


def _fmt(value) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


RANGE_COLUMN = "corpus p10–median–p90"  # the real melodies' range beside the structure metrics (20-s excerpts)


def _range(entry: dict | None) -> str:
    return "" if not entry else f"{_fmt(entry['p10'])}–{_fmt(entry['median'])}–{_fmt(entry['p90'])}"


def _table(data: dict) -> None:
    """The report as rich tables on stderr (nothing when quiet)."""
    if log.quiet():
        return
    from rich.table import Table

    from v2m.stages.evaluate.report import METRICS

    console = log.console()
    ranges = data.get("corpus_range") or {}
    if data.get("rows") is not None:
        # a few headline columns (fits 80 columns); the summary below and the report have every metric
        keys = [k for k in ("beat_f1", "onset_f1", "beat_align", "scale_consistency", "groove_consistency")
                if any(r["metrics"].get(k) is not None for r in data["rows"])][:4]
        rows = Table(title=f"evaluate: {len(data['rows'])} items", title_justify="left")
        rows.add_column("name")
        for key in keys:
            rows.add_column(key, justify="right")
        for row in data["rows"]:
            rows.add_row(row["name"], *[_fmt(row["metrics"].get(k)) for k in keys])
        for failure in data["failures"]:
            rows.add_row(f"[red]{failure['name']}[/red]", *["failed"] + [""] * (len(keys) - 1))
        console.print(rows)
        table = Table(title="summary", title_justify="left")
        table.add_column("metric")
        for stat in ("mean", "median", "worst"):
            table.add_column(stat, justify="right")
        if ranges:
            table.add_column(RANGE_COLUMN, justify="right")
        order = {name: i for i, name in enumerate(METRICS)}
        for name in sorted(data["summary"]["mean"], key=lambda n: (order.get(n, len(order)), n)):
            table.add_row(name, *[_fmt(data["summary"][s].get(name)) for s in ("mean", "median", "worst")],
                          *([_range(ranges.get(name))] if ranges else []))
    else:
        table = Table(title=f"evaluate ({data['mode']})", title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        if ranges:
            table.add_column(RANGE_COLUMN, justify="right")
        order = {name: i for i, name in enumerate(METRICS)}  # grouped: rhythm, controls, music, model
        for name in sorted(data["metrics"], key=lambda n: (order.get(n, len(order)), n)):
            table.add_row(name, _fmt(data["metrics"][name]), *([_range(ranges.get(name))] if ranges else []))
        for name, label in data["labels"].items():
            table.add_row(name, label)
    console.print(table)
    for gate in data["gates"]:
        verdict = "[red]FAILED[/red]" if gate["failed"] else "[green]passed[/green]"
        console.print(f"gate {gate['gate']}: {verdict} ({gate['detail']})")


def _diffusion(*args, **kwargs):
    """Model mode for a diffusion checkpoint (imported only then: it needs torch and the sampler)."""
    from v2m.stages.diffusion_eval import evaluate_diffusion

    return evaluate_diffusion(*args, **kwargs)
