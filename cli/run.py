"""Score a video, or a folder of videos, end to end: music on the beat, muxed.

Per video NAME, OUTDIR gets NAME.mp4 (the video with its new soundtrack),
NAME.wav, NAME.mid, NAME.rhythm.json, NAME.controls.json, NAME.tokens.json,
NAME.report.json (rhythm agreement and music statistics, as `v2m evaluate`
reports them) and, written last, NAME.done.json: the video is finished.

Rerunning the same command resumes: finished videos are skipped, and
half-finished ones (interrupted, even by kill -9) are redone. One bad video
never stops the others; the summary names each failure, and the exit status
is 1 if any failed. The model is loaded once per process (once per worker
with --jobs) and shared by every stage and every video.

Examples:

  v2m run samples/clip.mp4 -o out/

  v2m run videos/ -o scored/ --jobs 2 --style cinematic --seed 7

  v2m run videos/ -o scored/ --force        # redo finished videos too

  v2m run dance.mp4 -o out/ --tempo 96 --meter 3   # you know the tempo

  v2m run videos/ -o scored/ --shard 2/8    # job 2 of an array of 8

  v2m run videos/ -o scored/ --executor ray --ray-address HEAD:6379

Two runs (or shards) on one output folder share the work: a video is
claimed (OUT/.NAME.claim, a lease renewed while it is made) and made once;
a killed run's claims are taken over by the next run.

The table shows each video's tempo and its confidence; a video whose beats
were planned on its cuts (no confident pulse in the motion) gets a one-line
warning saying so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from v2m import log
from v2m.cli.common import Force


def command(
    input: Annotated[Path, typer.Argument(help="A video file, or a folder searched recursively for videos.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (created; sub-folders of INPUT "
                                                                "are kept).")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Videos processed in parallel, one worker process "
                                                           "(and one model load) each; with --executor ray, the "
                                                           "number of model actors.")] = 1,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Checkpoint; default: "
                                                                       "presets/default.safetensors.")] = None,
    kernel: Annotated[str, typer.Option(help="Kernel for quantized weights: auto, reference, ...")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when present).")] = "auto",
    style: Annotated[Optional[str], typer.Option(help="Arrangement style (a preset name or a .toml file).")] = None,
    arrange: Annotated[str, typer.Option(help="'auto' arranges in the style; 'none' keeps the generated "
                                              "line alone.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed, the same for every video.")] = 0,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (> 0).")] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")] = 0.95,
    candidates: Annotated[int, typer.Option("--candidates", "-n", help="Generate N candidates per video as one "
                                            "batch and keep the one whose beats heard in the mix best match the "
                                            "video's (never one worse than the first).")] = 1,
    batch: Annotated[Optional[int], typer.Option("--batch", "-b", help="Videos whose pieces are generated as one "
                                                 "batch, the others' CPU stages going on meanwhile (default: 8 on "
                                                 "a GPU, 1 on the CPU). Batches are padded to this many rows: "
                                                 "a video's music never depends on which videos share its batch.",
                                                 show_default=False)] = None,
    tempo: Annotated[Optional[float], typer.Option("--tempo", help="Tempo in BPM for every video, instead of "
                                                   "reading it (as extract-rhythm --tempo).",
                                                   show_default=False)] = None,
    meter: Annotated[Optional[int], typer.Option("--meter", help="Beats per bar (default: read per scene).",
                                                 show_default=False)] = None,
    sync: Annotated[str, typer.Option("--sync", help="auto: each scene's motion pulse where confident, else beats "
                                      "planned on the cuts; pulse: always the motion; cuts: always planned (as "
                                      "extract-rhythm --sync).")] = "auto",
    backend: Annotated[Optional[str], typer.Option(help="Require this model backend: transformer or diffusion (with "
                                                        "no --model, diffusion takes presets/diffusion.safetensors).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Diffusion backend: denoising steps (default 10).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Diffusion backend: classifier-free guidance weight "
                                                          "(default 3; 1 = none).")] = None,
    executor: Annotated[Optional[str], typer.Option(
        "--executor", help="Where videos run: local (this process), processes (--jobs worker processes), ray (a Ray "
        "cluster: a task per video, --jobs model actors; pip install 'v2m[ray]'). Default: local, or processes "
        "with --jobs > 1.", show_default=False)] = None,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="The Ray cluster to join (e.g. HEAD:6379, or 'auto'); default: RAY_ADDRESS, else a "
        "local cluster on this machine's CPUs.", show_default=False)] = None,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", help="Only shard I of N (0 ≤ I < N) of the videos, split by relative path: one job of a Slurm "
        "array (--shard $SLURM_ARRAY_TASK_ID/N). Shards, and runs, may share an output folder: each video is "
        "claimed while made, never made twice.", show_default=False)] = None,
    force: Force = False,
) -> None:
    from v2m.stages.run.batch import exit_code, parse_shard, prepare, run_batch, run_config

    config = run_config(jobs=jobs, batch=batch, arrange=arrange, device=device, executor=executor, model=model,
                        kernel=kernel, style=style, seed=seed, temperature=temperature, top_p=top_p,
                        candidates=candidates, tempo=tempo, meter=meter, sync=sync, backend=backend, steps=steps,
                        guidance=guidance)
    part = parse_shard(shard)
    jobs_list, expected = prepare(input, output, config, shard=part)
    if part is not None:
        log.info(f"shard {part[0]}/{part[1]}: {len(jobs_list)} video(s)")
    started = time.perf_counter()
    with BatchDisplay(jobs_list) as display:
        results = run_batch(jobs_list, config, expected, jobs=jobs, force=force, executor=executor,
                            address=ray_address, status=display.status, on_result=display.result)
    summarise(results, time.perf_counter() - started)
    code = exit_code(results)
    if code:
        raise typer.Exit(code)


class BatchDisplay:
    """An overall progress bar on stderr with each active video's stage; one line per finished video."""

    def __init__(self, jobs_list):
        self.total = len(jobs_list)
        self.active: dict[str, str] = {}
        self.bar = None

    def __enter__(self):
        import sys

        if not log.quiet() and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]run"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.description}"), console=log.console(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def status(self, key: str, stage: str) -> None:
        if stage in ("done", "skipped", "failed"):
            self.active.pop(key, None)
        elif stage.startswith("being made by") and key not in self.active:
            log.info(f"{key}: {stage} (claimed); waiting for it")
            self.active[key] = "claimed elsewhere"
        else:
            self.active[key] = stage
        if self.bar is not None:
            shown = ", ".join(f"{k}: {s}" for k, s in list(self.active.items())[:4])
            self.bar.update(self.task, description=shown)

    def result(self, result) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)
        if result.status == "done":
            tail = f" ({result.total_seconds():.1f} s)"
        else:
            tail = f": {result.error}" if result.error else " (finished earlier)"
        if result.status == "failed":
            log.warn(f"{result.key} failed{tail}")
        else:
            log.info(f"{result.key} {result.status}{tail}")
        if result.status == "done" and result.warning:
            log.warn(f"{result.key}: {result.warning}")


def summarise(results, wall: float) -> None:
    """A table on stderr: one row per video, failures named with their reason."""
    from rich.table import Table

    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    table = Table(title=f"v2m run: {counts['done']} done, {counts['skipped']} skipped (already finished), "
                        f"{counts['failed']} failed — {wall:.1f} s", title_justify="left")
    for column in ("video", "status", "seconds", "× real time", "tempo", "confidence", "beat F"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")  # a failure's whole reason, wrapped, never cut
    for r in results:
        seconds = r.total_seconds()
        ratio = f"{seconds / r.duration:.2f}" if seconds and r.duration else ""
        beat_f = r.metrics.get("beat_f1")
        tempo, confidence = r.tempo.get("bpm"), r.tempo.get("confidence")
        how = {"planned": " planned", "hint": " given"}.get(r.tempo.get("source"), "")
        if r.tempo.get("source") == "estimated" and r.tempo.get("planned"):
            how = f" {r.tempo['planned']:.0%} planned"
        table.add_row(r.key, r.status, f"{seconds:.1f}" if seconds else "", ratio,
                      f"{tempo:.1f}{how}" if tempo is not None else "",
                      f"{confidence:.2f}" if confidence is not None else "",
                      f"{beat_f:.3f}" if beat_f is not None else "", r.error or "",
                      style="red" if r.status == "failed" else None)
    if not log.quiet() or counts["failed"]:
        log.console().print(table)
