"""Options and helpers shared by subcommands: output/force options, batch error isolation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Iterable

import typer

from v2m import log
from v2m.errors import V2MError

Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")]
Output = Annotated[str, typer.Option("--output", "-o", help="Output file ('-' = stdout).")]

def for_each_file(items: Iterable[Path], work: Callable[[Path], None], what: str = "file") -> int:
    """Run `work` on each item; one failure never stops the others.

    Returns the exit code: 0 if all succeeded, 1 if any failed (each failure named in the summary).
    """
    failures: list[tuple[Path, str]] = []
    done = 0
    for item in items:
        try:
            work(item)
            done += 1
        except V2MError as e:
            failures.append((item, e.one_line()))
            log.warn(f"{item}: {e.one_line()}")
        except Exception as e:  # isolate unexpected failures too, but name them
            failures.append((item, f"internal error: {type(e).__name__}: {e}"))
            log.warn(f"{item}: internal error: {type(e).__name__}: {e}")
    log.info(f"{done} {what}(s) done, {len(failures)} failed")
    for item, message in failures:
        log.console().print(f"  failed: {item}: {message}", style="red", markup=False)
    return 1 if failures else 0
