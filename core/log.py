"""Logging and progress on stderr only: stdout carries nothing but the artifact.

Messages go through the standard library's `logging` (logger "v2m"), printed on stderr by a rich console:
status lines at INFO, `warning: ...` at WARNING, `debug: ...` at DEBUG. The level follows the command line,
passed on to worker processes through the environment:

    -q / --quiet   V2M_QUIET=1      warnings and errors only
    (default)                       status lines
    -v             V2M_VERBOSE=1    v2m's debug lines too (why a fast path is off, which engine runs, ...)
    -vv            V2M_VERBOSE=2    every library's debug lines as well (the root logger)
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

LOGGER = logging.getLogger("v2m")
_console = None
_handler: logging.Handler | None = None
_applied: tuple | None = None  # the (quiet, verbosity) the loggers were last set for


def console():
    """The shared rich console, bound to stderr (created on first use to keep start-up lean)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _console


class ConsoleHandler(logging.Handler):
    """Prints records on the rich stderr console: INFO plain, WARNING and above in yellow, DEBUG dimmed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                console().print(f"{record.levelname.lower()}: {message}", style="yellow", markup=False)
            elif record.levelno < logging.INFO:
                name = "" if record.name.startswith("v2m") else f"{record.name}: "
                console().print(f"debug: {name}{message}", style="dim", markup=False)
            else:
                console().print(message, markup=False)
        except Exception:  # noqa: BLE001 — logging must never raise into the caller
            self.handleError(record)


def quiet() -> bool:
    return os.environ.get("V2M_QUIET", "") not in ("", "0")


def verbosity() -> int:
    try:
        return max(0, int(os.environ.get("V2M_VERBOSE", "0") or 0))
    except ValueError:
        return 0


def set_level(quiet_flag: bool = False, verbose: int = 0) -> None:
    """The command line's choice (-q, -v, -vv), kept in the environment so worker processes inherit it."""
    if quiet_flag:
        os.environ["V2M_QUIET"] = "1"
    if verbose:
        os.environ["V2M_VERBOSE"] = str(verbose)
    _apply()


def _apply() -> None:
    """Point the stdlib loggers at the level the environment asks for (cheap when nothing changed)."""
    global _handler, _applied
    wanted = (quiet(), verbosity())
    if wanted == _applied:
        return
    if _handler is None:
        _handler = ConsoleHandler()
        LOGGER.addHandler(_handler)
        LOGGER.propagate = False
    is_quiet, verbose = wanted
    LOGGER.setLevel(logging.WARNING if is_quiet else logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    if verbose >= 2 and _handler not in root.handlers:
        root.addHandler(_handler)
        root.setLevel(logging.DEBUG)
    _applied = wanted


def info(message: str) -> None:
    """A status line on stderr (suppressed by --quiet / V2M_QUIET=1)."""
    _apply()
    LOGGER.info(message)


def warn(message: str) -> None:
    """A warning on stderr; shown even when quiet."""
    _apply()
    LOGGER.warning(message)


def debug(message: str) -> None:
    """A detail for -v: why a fast path is off, which engine or kernel runs, what was skipped."""
    _apply()
    LOGGER.debug(message)


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
