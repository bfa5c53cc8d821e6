"""The wheel ships every package and every file the code reads at run time (C sources, presets), by the
package map in pyproject.toml: a sub-package or a data folder added to the tree but not to the map would work
from a checkout and fail once installed."""

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def packages_on_disk() -> dict[str, Path]:
    """Package name → folder, for every folder with an __init__.py under a mapped top-level folder."""
    found = {}
    for name, folder in SETUPTOOLS["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            sub = init.parent.relative_to(base).parts
            found[".".join([name, *sub])] = init.parent
    # data-only packages (no __init__.py) the map lists on purpose
    for name in SETUPTOOLS["packages"]:
        if name not in found:
            parent, _, child = name.rpartition(".")
            found[name] = found[parent] / child
    return found


def test_every_package_is_listed():
    on_disk = packages_on_disk()
    assert set(on_disk) == set(SETUPTOOLS["packages"]), set(on_disk) ^ set(SETUPTOOLS["packages"])


def test_every_runtime_data_file_is_shipped():
    """C sources and headers, presets, the engines' README: each matched by its package's package-data globs."""
    data = SETUPTOOLS["package-data"]
    missing = []
    for name, folder in packages_on_disk().items():
        for path in folder.rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            # the file belongs to the deepest package whose folder holds it
            if any(other != name and other.startswith(name + ".") and path.is_relative_to(f)
                   for other, f in packages_on_disk().items()):
                continue
            relative = path.relative_to(folder).as_posix()
            if not any(fnmatch.fnmatch(relative, pattern) for pattern in data.get(name, [])):
                missing.append(f"{name}: {relative}")
    assert not missing, missing
