"""The `v2m` command: a typer app with one module per subcommand.

Subcommand modules import only typer and v2m's core at import time; heavy libraries
(torch, librosa, miditok) are imported inside the command bodies so `v2m --help`
stays fast. `main()` maps errors to exit codes (docs/ARCHITECTURE.md, "Errors and exit codes").
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

try:  # typer ≥ 0.22 vendors click as typer._click; older typer uses click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from v2m import __version__, log
from v2m.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, V2MError

# (command name, module): each module defines `command`, registered in this order.
COMMANDS: list[tuple[str, str]] = [
    ("extract-rhythm", "v2m.cli.extract_rhythm"),
    ("encode-tokens", "v2m.cli.encode_tokens"),
    ("decode", "v2m.cli.decode"),
    ("train", "v2m.cli.train"),
    ("evaluate", "v2m.cli.evaluate"),
    ("quantize", "v2m.cli.quantize"),
    ("sweep", "v2m.cli.sweep"),
    ("generate", "v2m.cli.generate"),
    ("run", "v2m.cli.run"),
    ("sample", "v2m.cli.sample"),
]

app = typer.Typer(
    name="v2m",
    help="Turn the rhythm of a video into music that fits it.\n\n"
         "Stages read and write files and chain through pipes ('-' is stdin/stdout):\n\n"
         "\b\n  v2m extract-rhythm clip.mp4 | v2m encode-tokens - | v2m generate - | v2m decode - -o clip.mid\n\n"
         "-q, -v, -vv and --debug may also follow the subcommand (v2m run videos/ -o out/ -v).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion: typer's, for bash, zsh, fish and PowerShell
    # plain help text (click's formatter): rich's help panels import rich.markdown and rich.traceback,
    # 0.12 s of the 0.3 s `v2m --help` budget (issue 10), and our help strings carry no markup
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"v2m {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (same as V2M_DEBUG=1)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and warnings on stderr (same as V2M_QUIET=1)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False, help="More detail on stderr: -v v2m's debug lines "
                                "(which engine and kernels run, why a fast path is off), -vv every library's too."),
) -> None:
    if debug:
        os.environ["V2M_DEBUG"] = "1"
    log.set_level(quiet, verbose)


# the options of _root, accepted after the subcommand too (`v2m run x -o y -v`): moved in front of it
GLOBAL_FLAGS = {"-q", "--quiet", "-v", "-vv", "-vvv", "--verbose", "--debug"}


def global_flags_first(argv: list[str]) -> list[str]:
    """argv with the global flags that follow the subcommand moved before it (never past a `--`)."""
    names = {name for name, _ in COMMANDS}
    at = next((i for i, arg in enumerate(argv) if arg in names), None)
    if at is None:
        return argv
    end = argv.index("--") if "--" in argv[at:] else len(argv)
    moved = [arg for arg in argv[at + 1:end] if arg in GLOBAL_FLAGS]
    if not moved:
        return argv
    rest = [arg for arg in argv[at + 1:end] if arg not in GLOBAL_FLAGS]
    return [*argv[:at], *moved, argv[at], *rest, *argv[end:]]


def help_text(doc: str | None) -> str | None:
    """A command module's docstring as click's help: indented paragraphs (example commands, lists) keep their
    lines as written (click's `\\b` marker) instead of being re-wrapped at the terminal's width — a wrapped
    example command would no longer copy-paste."""
    if not doc:
        return doc
    paragraphs = doc.strip("\n").split("\n\n")
    return "\n\n".join("\b\n" + p if p.startswith("  ") else p for p in paragraphs)


for _name, _module in COMMANDS:
    _mod = importlib.import_module(_module)
    app.command(_name, help=help_text(_mod.__doc__), no_args_is_help=getattr(_mod, "NO_ARGS_IS_HELP", True))(_mod.command)


def _debug() -> bool:
    # argv too: an error raised while parsing comes before the --debug callback has set V2M_DEBUG
    return log.debug_enabled() or "--debug" in sys.argv[1:]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app and turn every failure into one line and an exit code."""
    code = 0
    argv = global_flags_first(list(sys.argv[1:] if argv is None else argv))
    # the flags set these for this invocation (and the worker processes it starts), not for a caller's later ones
    saved = {name: os.environ.get(name) for name in ("V2M_QUIET", "V2M_VERBOSE", "V2M_DEBUG")}
    try:
        result = app(args=argv, standalone_mode=False, prog_name="v2m")
        code = result if isinstance(result, int) else 0
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into a silent exit code 130: say it
            print("v2m: interrupted", file=sys.stderr)
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        print("v2m: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except click_exceptions.ClickException as e:  # usage errors: bad option, missing argument
        e.show(file=sys.stderr)
        code = EXIT_USAGE if isinstance(e, click_exceptions.UsageError) else EXIT_ERROR
    except KeyboardInterrupt:
        print("v2m: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except V2MError as e:
        if _debug():
            import traceback

            traceback.print_exc()
        print(f"v2m: error: {e.one_line()}", file=sys.stderr)
        code = getattr(e, "exit_code", EXIT_ERROR)
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): not our failure to report
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            code = EXIT_ERROR
    except Exception as e:  # an unexpected failure is still one line unless debugging
        if _debug():
            import traceback

            traceback.print_exc()
        print(f"v2m: internal error: {type(e).__name__}: {e} (run with --debug for the traceback, and please report it)",
              file=sys.stderr)
        code = EXIT_ERROR
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return code


def entry() -> None:  # pragma: no cover - thin wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
