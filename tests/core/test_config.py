"""Presets: TOML into frozen dataclasses, unknown keys and wrong types are errors."""

from dataclasses import FrozenInstanceError, dataclass

import pytest

from v2m.config import from_dict, load_preset, to_dict
from v2m.errors import V2MError
from v2m.registry import Registry


@dataclass(frozen=True)
class Inner:
    size: int = 4


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    rate: float = 1.0
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = Inner()


def test_from_dict_nested_and_frozen():
    cfg = from_dict(Outer, {"name": "y", "rate": 2, "sizes": [3], "inner": {"size": 8}})
    assert cfg == Outer("y", 2.0, (3,), Inner(8))
    assert to_dict(cfg) == {"name": "y", "rate": 2.0, "sizes": [3], "inner": {"size": 8}}
    with pytest.raises(FrozenInstanceError):
        cfg.name = "z"


def test_unknown_key_is_an_error():
    with pytest.raises(V2MError, match=r"unknown key\(s\) colour.*known keys: name, rate, sizes, inner"):
        from_dict(Outer, {"colour": "red"})
    with pytest.raises(V2MError, match=r"inner: unknown key\(s\) sise"):
        from_dict(Outer, {"inner": {"sise": 2}})


def test_wrong_type_is_an_error():
    with pytest.raises(V2MError, match="expected an integer"):
        from_dict(Outer, {"inner": {"size": "big"}})
    with pytest.raises(V2MError, match="expected a number"):
        from_dict(Outer, {"rate": True})


def test_load_preset_from_path_and_unknown_name(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "file"\n[inner]\nsize = 2\n')
    assert load_preset("things", str(path), Outer).inner.size == 2
    with pytest.raises(V2MError, match="unknown thing preset 'nope'"):
        load_preset("things", "nope", Outer)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(V2MError, match="invalid TOML"):
        load_preset("things", str(bad), Outer)


def test_registry_lists_names_on_unknown():
    reg = Registry("kernel")

    @reg.register("reference")
    def ref():
        return 1

    reg.register_lazy("lazy", "math:sqrt")
    assert reg.get("lazy")(4.0) == 2.0
    with pytest.raises(V2MError, match="unknown kernel 'fast'.*available: lazy, reference"):
        reg.get("fast")


def test_a_name_is_the_bundled_preset_even_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    """`v2m run clip.mp4 -o pop --style pop`: the output folder `pop` must not shadow the style (it was an internal
    error); a path is a path only when it looks like one (a slash, or .toml), and a missing one is one line."""
    import pytest

    from v2m.errors import V2MError
    from v2m.stages.arrange.styles import load_style

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pop").mkdir()
    assert load_style("pop").name == "pop"
    with pytest.raises(V2MError, match="no such style file"):
        load_style("./pop")
    (tmp_path / "mine.toml").write_text('[melody]\ndensity = 1\n')
    assert load_style("mine.toml").melody.density == 1
