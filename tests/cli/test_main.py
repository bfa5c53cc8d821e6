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
