"""Logging and progress on stderr only: stdout carries nothing but the artifact."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

_console = None


def console():
    """The shared rich console, bound to stderr (created on first use to keep start-up lean)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _console


def quiet() -> bool:
    return os.environ.get("V2M_QUIET", "") not in ("", "0")


def info(message: str) -> None:
    """A status line on stderr (suppressed by --quiet / V2M_QUIET=1)."""
    if not quiet():
        console().print(message, markup=False)


def warn(message: str) -> None:
    """A warning on stderr; shown even when quiet."""
    console().print(f"warning: {message}", style="yellow", markup=False)


def debug_enabled() -> bool:
    return os.environ.get("V2M_DEBUG", "") not in ("", "0")


@contextmanager
def progress(description: str, total: float | None = None, unit: str = ""):
    """A progress bar on stderr; yields `advance(n=1)`. Silent when quiet or stderr is not a terminal."""
    if quiet() or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} " + unit),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
