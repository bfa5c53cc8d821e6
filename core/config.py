"""TOML presets loaded into frozen dataclasses. Unknown keys are an error, never ignored."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import V2MError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def user_cache_dir() -> Path:
    """Where v2m keeps per-user caches (built C kernels, lock files): $XDG_CACHE_HOME/v2m or ~/.cache/v2m."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "v2m"
T = TypeVar("T")


def presets_dir() -> Path:
    """The presets folder (source tree or installed package)."""
    try:
        import v2m.presets as presets_pkg

        return Path(presets_pkg.__file__).resolve().parent
    except ImportError:  # pragma: no cover - only when the package is not importable
        return PRESETS_DIR


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, recursing into nested dataclasses.

    Unknown keys raise a V2MError naming them and the known ones; values are checked
    against the field's basic type (int/float/str/bool/tuple/list).
    """
    if not isinstance(data, dict):
        raise V2MError(f"{where}: expected a table, found {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise V2MError(f"{where}: unknown key(s) {', '.join(unknown)}", f"known keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise V2MError(f"{where}: {e}")
    except ValueError as e:  # __post_init__ validation
        raise V2MError(f"{where}: {e}")


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise V2MError(f"{where}: expected a list, found {value!r}")
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise V2MError(f"{where}: expected a table, found {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise V2MError(f"{where}: expected a number, found {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer past float's range (10**400)
            raise V2MError(f"{where}: {str(value)[:20]}... is out of range") from None
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise V2MError(f"{where}: expected an integer, found {value!r}")
        return value
    if hint is bool and not isinstance(value, bool):
        raise V2MError(f"{where}: expected true or false, found {value!r}")
    if hint is str and not isinstance(value, str):
        raise V2MError(f"{where}: expected a string, found {value!r}")
    return value


def to_dict(obj: Any) -> dict:
    """A dataclass as a plain dict (tuples become lists), for recording in artifacts."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))


def load_toml(path: str | Path) -> dict:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise V2MError(f"{path}: no such preset file")
    except tomllib.TOMLDecodeError as e:
        raise V2MError(f"{path}: invalid TOML ({e})")


def preset_names(kind: str) -> list[str]:
    """Names of the presets of one kind (a subfolder of presets/, e.g. "models", "styles")."""
    return sorted(p.stem for p in (presets_dir() / kind).glob("*.toml"))


def load_preset(kind: str, name_or_path: str, cls: type[T]) -> T:
    """Load a preset by name (presets/<kind>/<name>.toml) or by a path to a TOML file. A name resolves to the
    bundled preset first; the argument is a path only when it clearly is one (it ends in .toml or holds a slash),
    so a folder called `pop` beside you does not shadow the style `pop`."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path or os.sep in name_or_path:
        path = candidate
        if not path.is_file():
            raise V2MError(f"{path}: no such {kind[:-1] if kind.endswith('s') else kind} file",
                           f"bundled ones are used by name: {', '.join(preset_names(kind))}")
    else:
        path = presets_dir() / kind / f"{name_or_path}.toml"
        if not path.exists():
            raise V2MError(f"unknown {kind[:-1] if kind.endswith('s') else kind} preset '{name_or_path}'",
                           f"available: {', '.join(preset_names(kind))} (or a path to a .toml file)")
    return from_dict(cls, load_toml(path), where=str(path.name))
