"""The CLI shell: help, version, exit codes, one-line errors, and lean start-up."""

import subprocess
import sys

from v2m.cli.main import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("v2m ")


def test_help_lists_usage(capsys):
    assert main(["--help"]) == 0
    assert "Usage: v2m" in capsys.readouterr().out


def test_unknown_command_is_usage_error(capsys):
    assert main(["no-such-stage"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "No such command" in captured.err


def test_help_does_not_import_torch():
    code = "import sys; from v2m.cli.main import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_python_dash_m_v2m_is_the_command():
    run = subprocess.run([sys.executable, "-m", "v2m", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("v2m ")


def test_global_flags_may_follow_the_subcommand():
    from v2m.cli.main import global_flags_first

    assert global_flags_first(["run", "x", "-o", "y", "-v"]) == ["-v", "run", "x", "-o", "y"]
    assert global_flags_first(["--debug", "evaluate", "a", "-q", "b"]) == ["--debug", "-q", "evaluate", "a", "b"]
    assert global_flags_first(["decode", "-", "-o", "x.mid", "--", "-v"]) == ["decode", "-", "-o", "x.mid", "--", "-v"]
    assert global_flags_first(["--help"]) == ["--help"]


def test_verbosity_levels_reach_stdlib_logging(tmp_path):
    """-q hides status lines, -v adds v2m's debug lines (here: the lean/C decode engine and kernels), wherever
    the flag is written; the flags do not outlive the invocation."""
    import json
    import os

    from tests.stages.generate.test_generate import grid_controls
    from v2m import artifacts
    from v2m.stages.tokens.vocab import load_tokenizer

    controls = grid_controls(load_tokenizer(), bars=2)
    path = tmp_path / "c.json"
    path.write_bytes(artifacts.dumps(artifacts.make_artifact("v2m.controls", controls, stage="test")))
    base = [sys.executable, "-m", "v2m", "generate", str(path), "--device", "cpu", "--bars", "2", "-o"]
    env = {k: v for k, v in os.environ.items() if k not in ("V2M_QUIET", "V2M_VERBOSE")}
    quiet = subprocess.run([*base, str(tmp_path / "q.json"), "-q"], capture_output=True, text=True, env=env)
    plain = subprocess.run([*base, str(tmp_path / "p.json")], capture_output=True, text=True, env=env)
    verbose = subprocess.run([*base, str(tmp_path / "v.json"), "-v"], capture_output=True, text=True, env=env)
    assert quiet.returncode == plain.returncode == verbose.returncode == 0, verbose.stderr
    assert quiet.stderr == "" and "generating" in plain.stderr and "debug:" not in plain.stderr
    assert "debug: generate: kernels float, decode engine" in verbose.stderr
    recorded = json.loads((tmp_path / "v.json").read_text())["created_by"]["config"]
    assert recorded["kernel"] == "float" and recorded["engine"] in ("c-one-call", "c-per-layer", "lean")
    assert main(["--version", "-q"]) == 0 and "V2M_QUIET" not in os.environ


def test_ctrl_c_is_one_line_exit_130_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """typer turns KeyboardInterrupt into a silent Exit(130); main() says so in one line, and the output's
    temporary file is gone (atomic writes clean up on any exception)."""
    from tests.media import video
    from v2m.stages.rhythm import extract

    clip, _ = video(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract, "extract_rhythm", interrupted)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["extract-rhythm", str(clip), "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 130 and err.strip().splitlines()[-1] == "v2m: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
