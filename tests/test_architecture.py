"""The direction of imports (docs/ARCHITECTURE.md), enforced by import-linter's contracts in pyproject.toml.

import-linter finds a package's modules by walking its folder, and v2m's folders are mapped onto one package by
pyproject's package map (core/ → v2m, cli/ → v2m.cli, ...), so the check runs on a copy of the tree laid out as
the import names say. Each contract is also shown to fail on a planted violation: a contract that cannot fail
checks nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"


def laid_out(dest: Path) -> Path:
    """A copy of every module under `dest/v2m/...`, as the package map places it; returns `dest`."""
    package_dir = tomllib.loads(CONFIG.read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in package_dir.items():
        target = dest / Path(*name.split("."))
        for source in (ROOT / folder).rglob("*.py"):
            out = target / source.relative_to(ROOT / folder)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, out)
    return dest


def lint(layout: Path) -> subprocess.CompletedProcess:
    """lint-imports on the laid-out copy (found first on the path: v2m's own install maps folders instead)."""
    # the copy first; the rest of the path stays (import-linter may be installed there, as on the GPU box)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(layout), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
               "sys.exit(c())", "--config", str(CONFIG), "--no-cache"]
    return subprocess.run(command, cwd=layout, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return laid_out(tmp_path_factory.mktemp("layout"))


def test_every_contract_is_kept(layout):
    run = lint(layout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "3 kept, 0 broken" in run.stdout
    # the copy holds every module (an empty or partial layout would keep every contract too)
    modules = {p.relative_to(layout).with_suffix("").as_posix().replace("/", ".") for p in layout.rglob("*.py")}
    assert {"v2m.cli.main", "v2m.stages.generate.sampler", "v2m.models.engines.native", "v2m.quant.storage",
            "v2m.checkpoint"} <= modules


@pytest.mark.parametrize("module,planted,broken", [
    ("v2m/quant/formats.py", "import v2m.models.loading", "Layers"),           # quant must not know models
    ("v2m/models/kv_cache.py", "import v2m.quant.linear", "Layers"),          # nor models quant
    ("v2m/checkpoint.py", "import v2m.stages.run.batch", "Layers"),          # core is the bottom
    ("v2m/cli/decode.py", "import v2m.models.loading", "The command line"),  # cli goes through stages
    ("v2m/stages/tokens/vocab.py", "import v2m.stages.tokens.convert", "No import cycles"),
])
def test_a_planted_violation_breaks_its_contract(tmp_path, module, planted, broken):
    layout = laid_out(tmp_path)
    with open(layout / module, "a") as f:
        f.write(f"\n{planted}  # planted\n")
    run = lint(layout)
    assert run.returncode != 0
    assert f"{broken}" in run.stdout.split("Broken contracts")[-1], run.stdout[-3000:]
