"""Arrangement styles: which instruments play, in which register, with which patterns.

A style is one TOML file in presets/styles/ (or any path to a .toml file) loaded into the
frozen `Style` dataclass by core/config.py, so an unknown key is an error, never ignored.
GM programs are written as numbers (0..127) or names ("acoustic_grand_piano",
"Acoustic Grand Piano" and "acoustic grand piano" all work); an unknown name or a number
outside 0..127 is one clear line. `resolved_settings(style)` is what artifacts record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from v2m.config import from_dict, load_preset, preset_names, to_dict
from v2m.stages.arrange.grooves import FAMILIES

# General MIDI level 1 program names, in program order (0..127).
GM_PROGRAMS = (
    "acoustic_grand_piano bright_acoustic_piano electric_grand_piano honky_tonk_piano electric_piano_1 "
    "electric_piano_2 harpsichord clavinet celesta glockenspiel music_box vibraphone marimba xylophone "
    "tubular_bells dulcimer drawbar_organ percussive_organ rock_organ church_organ reed_organ accordion "
    "harmonica tango_accordion acoustic_guitar_nylon acoustic_guitar_steel electric_guitar_jazz "
    "electric_guitar_clean electric_guitar_muted overdriven_guitar distortion_guitar guitar_harmonics "
    "acoustic_bass electric_bass_finger electric_bass_pick fretless_bass slap_bass_1 slap_bass_2 synth_bass_1 "
    "synth_bass_2 violin viola cello contrabass tremolo_strings pizzicato_strings orchestral_harp timpani "
    "string_ensemble_1 string_ensemble_2 synth_strings_1 synth_strings_2 choir_aahs voice_oohs synth_choir "
    "orchestra_hit trumpet trombone tuba muted_trumpet french_horn brass_section synth_brass_1 synth_brass_2 "
    "soprano_sax alto_sax tenor_sax baritone_sax oboe english_horn bassoon clarinet piccolo flute recorder "
    "pan_flute blown_bottle shakuhachi whistle ocarina lead_1_square lead_2_sawtooth lead_3_calliope "
    "lead_4_chiff lead_5_charang lead_6_voice lead_7_fifths lead_8_bass_lead pad_1_new_age pad_2_warm "
    "pad_3_polysynth pad_4_choir pad_5_bowed pad_6_metallic pad_7_halo pad_8_sweep fx_1_rain fx_2_soundtrack "
    "fx_3_crystal fx_4_atmosphere fx_5_brightness fx_6_goblins fx_7_echoes fx_8_sci_fi sitar banjo shamisen "
    "koto kalimba bagpipe fiddle shanai tinkle_bell agogo steel_drums woodblock taiko_drum melodic_tom "
    "synth_drum reverse_cymbal guitar_fret_noise breath_noise seashore bird_tweet telephone_ring helicopter "
    "applause gunshot"
).split()
assert len(GM_PROGRAMS) == 128

# GM2 drum kits: the program change on channel 10 that selects each (FluidR3_GM has them all).
DRUM_KITS = {"standard": 0, "room": 8, "power": 16, "electronic": 24, "tr808": 25, "jazz": 32, "brush": 40,
             "orchestra": 48}

HARMONY_PATTERNS = ("pad", "comp", "arpeggio", "strum", "none")
BASS_PATTERNS = ("root", "root_fifth", "octave", "pulse", "none")


def _normalise(name: str) -> str:
    return "_".join(name.lower().replace("-", " ").replace("(", " ").replace(")", " ").split())


def gm_program(value: int | str, role: str) -> int:
    """A GM program number from a number or a name; ValueError (one line) when it is neither."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{role} = {value!r}: expected a GM program number (0..127) or name")
    if isinstance(value, int):
        if not 0 <= value <= 127:
            raise ValueError(f"{role} = {value}: GM program is outside 0..127")
        return value
    key = _normalise(value)
    if key not in GM_PROGRAMS:
        import difflib

        close = [n for n in GM_PROGRAMS if len(key) >= 4 and key[:5] in n]
        close = (close + [n for n in difflib.get_close_matches(key, GM_PROGRAMS, n=3, cutoff=0.6) if n not in close])[:4]
        hint = f"did you mean {', '.join(close)}?" if close else "names look like acoustic_grand_piano, string_ensemble_1"
        raise ValueError(f"{role} = '{value}' is not a General MIDI program name ({hint})")
    return GM_PROGRAMS.index(key)


def drum_kit(value: int | str) -> int:
    if isinstance(value, str) and _normalise(value) in DRUM_KITS:
        return DRUM_KITS[_normalise(value)]
    if isinstance(value, str):
        raise ValueError(f"drum_kit = '{value}' is not a drum kit (known: {', '.join(DRUM_KITS)}, or a number 0..127)")
    return gm_program(value, "drum_kit")


def _check_range(pair: tuple[int, int], what: str) -> None:
    if len(pair) != 2 or not 0 <= pair[0] < pair[1] <= 127:
        raise ValueError(f"{what}: expected [low, high] MIDI pitches with 0 <= low < high <= 127, found {list(pair)}")


def _check_choice(value, choices: tuple | list, what: str) -> None:
    if value not in choices:
        raise ValueError(f"{what}: '{value}' is not one of {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class Instruments:
    """GM programs per role (numbers or names; stored resolved to numbers)."""
    melody: int | str = "acoustic_grand_piano"
    harmony: int | str = "string_ensemble_1"
    bass: int | str = "acoustic_bass"
    drum_kit: int | str = "standard"

    def __post_init__(self) -> None:
        for role in ("melody", "harmony", "bass"):
            object.__setattr__(self, role, gm_program(getattr(self, role), role))
        object.__setattr__(self, "drum_kit", drum_kit(self.drum_kit))


@dataclass(frozen=True)
class Register:
    """MIDI pitch ranges [low, high] per role; the melody is moved by whole octaves into its range."""
    melody: tuple[int, int] = (60, 84)
    harmony: tuple[int, int] = (52, 76)
    bass: tuple[int, int] = (31, 55)

    def __post_init__(self) -> None:
        for role in ("melody", "harmony", "bass"):
            _check_range(getattr(self, role), f"register.{role}")


@dataclass(frozen=True)
class Harmony:
    """How chords are estimated and played."""
    pattern: str = "pad"        # pad | comp | arpeggio | strum | none
    chords_per_bar: int = 1     # 1 (a chord per bar) or 2 (per half-bar)
    voices: int = 4             # notes per voicing, 3..5
    arpeggio_steps: int = 2     # notes per beat for "arpeggio" at full motion (1, 2, 3 or 4)

    def __post_init__(self) -> None:
        _check_choice(self.pattern, HARMONY_PATTERNS, "harmony.pattern")
        if self.chords_per_bar not in (1, 2):
            raise ValueError(f"harmony.chords_per_bar: expected 1 or 2, found {self.chords_per_bar}")
        if not 3 <= self.voices <= 5:
            raise ValueError(f"harmony.voices: expected 3..5, found {self.voices}")
        if self.arpeggio_steps not in (1, 2, 3, 4):
            raise ValueError(f"harmony.arpeggio_steps: expected 1, 2, 3 or 4, found {self.arpeggio_steps}")


@dataclass(frozen=True)
class Bass:
    pattern: str = "root_fifth"  # root | root_fifth | octave | pulse | none

    def __post_init__(self) -> None:
        _check_choice(self.pattern, BASS_PATTERNS, "bass.pattern")


@dataclass(frozen=True)
class Drums:
    """Drum pattern family (stages/arrange/grooves.py) and the levels it may use (0 silent .. 3 full)."""
    family: str = "pop"
    min_level: int = 0
    max_level: int = 3
    fills: bool = True          # a fill in the beat(s) before each scene cut
    crash_on_cuts: bool = True  # a crash (and kick) exactly on each scene cut

    def __post_init__(self) -> None:
        _check_choice(self.family, sorted(FAMILIES) + ["none"], "drums.family")
        if not 0 <= self.min_level <= self.max_level <= 3:
            raise ValueError(f"drums: expected 0 <= min_level <= max_level <= 3, found {self.min_level}, {self.max_level}")


@dataclass(frozen=True)
class Dynamics:
    """How motion drives the arrangement (all 0..1 unless noted)."""
    motion_drive: float = 0.8           # 0: motion ignored (always base_intensity), 1: intensity = motion
    base_intensity: float = 0.4         # intensity of a bar when motion is ignored
    velocity_range: tuple[int, int] = (45, 110)  # MIDI velocity at motion 0 and motion 1
    fade_seconds: float = 3.0           # fade-out length at the end, seconds

    def __post_init__(self) -> None:
        for name in ("motion_drive", "base_intensity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"dynamics.{name}: expected 0..1, found {getattr(self, name)}")
        lo, hi = self.velocity_range if len(self.velocity_range) == 2 else (0, -1)
        if not 1 <= lo <= hi <= 127:
            raise ValueError(f"dynamics.velocity_range: expected [low, high] with 1 <= low <= high <= 127, found {list(self.velocity_range)}")
        if self.fade_seconds < 0:
            raise ValueError(f"dynamics.fade_seconds: expected >= 0, found {self.fade_seconds}")


@dataclass(frozen=True)
class Mix:
    """Per-track level 0..127, as MIDI volume (CC 7) would set it (100 = the GM default, unchanged),
    applied as a velocity scale so every renderer honours it; chosen so a FluidSynth render does not clip."""
    melody: int = 100
    harmony: int = 70
    bass: int = 90
    drums: int = 85

    def __post_init__(self) -> None:
        for role in ("melody", "harmony", "bass", "drums"):
            if not 0 <= getattr(self, role) <= 127:
                raise ValueError(f"mix.{role}: expected 0..127, found {getattr(self, role)}")


GRIDS = (1, 2, 3, 4, 6, 12)  # onsets per beat a melody may use (the vocabulary has 12 positions per beat)


@dataclass(frozen=True)
class Melody:
    """How the style shapes the generated line itself (generate applies these while sampling; FaderNets-style
    high-level controls reached through the low-level ones the model knows: density classes and token masks).

    `density` is added to every bar's density class; `grid` is how many onsets per beat are allowed (4 =
    sixteenths, 3 = triplets, 2 = eighths, 1 = beats); `shortest` the shortest note in beats; `articulation`
    the sounding part of each note (1.0 legato, 0.5 staccato: applied by the arranger); `tempo` the style's
    preferred BPM range: a faster video is played in half time (density one lower, half the grid), a slower one
    in double time (one higher, twice the grid), so the beats stay the video's."""
    density: int = 0
    grid: int = 4
    shortest: float = 0.25
    articulation: float = 0.9
    tempo: tuple[float, float] = (70.0, 150.0)

    def __post_init__(self) -> None:
        if not -3 <= self.density <= 3:
            raise ValueError(f"melody.density: expected -3..3, found {self.density}")
        _check_choice(self.grid, GRIDS, "melody.grid")
        if not 1 / 12 <= self.shortest <= 4:
            raise ValueError(f"melody.shortest: expected 1/12..4 beats, found {self.shortest}")
        if not 0.2 <= self.articulation <= 1.0:
            raise ValueError(f"melody.articulation: expected 0.2..1.0, found {self.articulation}")
        if len(self.tempo) != 2 or not 20 <= self.tempo[0] < self.tempo[1] <= 300:
            raise ValueError(f"melody.tempo: expected [low, high] BPM with 20 <= low < high <= 300, found {list(self.tempo)}")


@dataclass(frozen=True)
class Style:
    name: str = ""
    description: str = ""
    instruments: Instruments = field(default_factory=Instruments)
    register: Register = field(default_factory=Register)
    harmony: Harmony = field(default_factory=Harmony)
    bass: Bass = field(default_factory=Bass)
    drums: Drums = field(default_factory=Drums)
    dynamics: Dynamics = field(default_factory=Dynamics)
    mix: Mix = field(default_factory=Mix)
    melody: Melody = field(default_factory=Melody)


def style_names() -> list[str]:
    """Names of the bundled styles (presets/styles/*.toml)."""
    return preset_names("styles")


def load_style(name_or_path: str | Style | dict) -> Style:
    """A bundled style by name, a style TOML by path, or the `settings` dict an artifact recorded
    (`resolved_settings`, so a custom style file need not travel with the artifact). Errors are one
    line; an unknown name lists the available ones."""
    if isinstance(name_or_path, Style):
        return name_or_path
    if isinstance(name_or_path, dict):
        return from_dict(Style, name_or_path, where="recorded style")
    style = load_preset("styles", str(name_or_path), Style)
    return style if style.name else dataclasses.replace(style, name=Path(str(name_or_path)).stem)


def resolved_settings(style: Style) -> dict:
    """The style with every value resolved (GM programs as numbers), to record in artifacts."""
    return to_dict(style)
