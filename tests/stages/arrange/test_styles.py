"""Style presets: the bundled five load and differ; bad styles are one clear line each."""

from __future__ import annotations

import json

import pytest

from v2m.config import from_dict
from v2m.errors import V2MError
from v2m.stages.arrange.styles import GM_PROGRAMS, Style, gm_program, load_style, resolved_settings, style_names

BUNDLED = ["ambient", "chiptune", "cinematic", "folk", "pop"]


def one_line(error: pytest.ExceptionInfo) -> str:
    text = error.value.one_line()
    assert "\n" not in text
    return text


def test_bundled_styles_load_and_differ():
    assert style_names() == BUNDLED
    styles = [load_style(name) for name in BUNDLED]
    for name, style in zip(BUNDLED, styles):
        assert style.name == name and style.description
        for role in ("melody", "harmony", "bass", "drum_kit"):
            assert 0 <= getattr(style.instruments, role) <= 127
    # clearly different arrangements: no two share the harmony instrument, pattern family or bass pattern set
    assert len({s.instruments.harmony for s in styles}) == 5
    assert len({s.drums.family for s in styles}) == 5
    assert len({(s.harmony.pattern, s.bass.pattern) for s in styles}) == 5


def test_program_names_resolve_in_any_spelling():
    assert gm_program("Acoustic Grand Piano", "melody") == 0
    assert gm_program("string-ensemble-1", "harmony") == 48
    assert gm_program("lead_1_square", "melody") == 80
    assert gm_program(127, "bass") == 127 and GM_PROGRAMS[127] == "gunshot"


def test_unknown_style_lists_the_available_ones():
    with pytest.raises(V2MError) as error:
        load_style("polka")
    text = one_line(error)
    assert "polka" in text and all(name in text for name in BUNDLED)


@pytest.mark.parametrize("toml, words", [
    ('tempo = 3\n', ["unknown key", "tempo"]),
    ('[drums]\nfamily = "pop"\nswing = 0.2\n', ["unknown key", "swing", "family"]),
    ('[instruments]\nmelody = 200\n', ["melody", "200", "0..127"]),
    ('[instruments]\nbass = -1\n', ["bass", "-1", "0..127"]),
    ('[instruments]\nharmony = "pianoo"\n', ["harmony", "pianoo", "not a General MIDI program"]),
    ('[instruments]\ndrum_kit = "marching"\n', ["drum_kit", "marching", "standard"]),
    ('[drums]\nfamily = "polka"\n', ["drums.family", "polka", "cinematic"]),
    ('[harmony]\npattern = "stride"\n', ["harmony.pattern", "stride", "arpeggio"]),
    ('[register]\nbass = [60, 40]\n', ["register.bass", "low < high"]),
    ('[dynamics]\nmotion_drive = 1.5\n', ["motion_drive", "0..1"]),
    ('[mix]\ndrums = "loud"\n', ["mix.drums", "expected an integer"]),
    ('[harmony\n', ["invalid TOML"]),
])
def test_bad_style_files_are_one_clear_line(tmp_path, toml, words):
    path = tmp_path / "mine.toml"
    path.write_text(toml)
    with pytest.raises(V2MError) as error:
        load_style(str(path))
    text = one_line(error)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    assert "mine.toml" in text


def test_a_user_style_is_one_toml_file_with_defaults_for_the_rest(tmp_path):
    path = tmp_path / "noir.toml"
    path.write_text('description = "late night"\n[instruments]\nmelody = "muted_trumpet"\nbass = 32\n'
                    '[drums]\nfamily = "ambient"\n')
    style = load_style(str(path))
    assert style.name == "noir" and style.instruments.melody == 59 and style.instruments.bass == 32
    assert style.drums.family == "ambient" and style.harmony == Style().harmony


def test_resolved_settings_are_json_and_rebuild_the_same_style():
    for name in BUNDLED:
        style = load_style(name)
        settings = resolved_settings(style)
        again = from_dict(Style, json.loads(json.dumps(settings)))
        assert again == style
