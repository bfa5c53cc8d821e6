"""The v2m vocabulary: a MidiTok REMI tokenizer plus v2m control tokens, and MIDI ↔ ids.

Why this configuration (measured in bench/tokens_roundtrip.py, figures in BENCHMARKS.md):

- **REMI** (Huang & Yang 2020, "Pop Music Transformer"): explicit `Bar` and `Position` tokens give the
  bar grid that the controls attach to (CMT-style interleaving, Di et al. 2021 "Video Background Music
  Generation with Controllable Music Transformer"), and that `generate` forces from the video.
- **One merged track, no Program tokens**: the music21 corpus is chorales, motets and folk tunes played
  as one keyboard part; a Program token per note would cost ~25 % more tokens for no information.
  Track roles (bass, drums, harmony) are added later by `arrange`, not learned.
- **No Velocity tokens**: the corpus' velocities are constant (score formats carry none); dynamics come
  from the per-bar `velocity` of the controls at decode time.
- **Beat resolution 12** for the first 4 beats (both sixteenths and triplets are exact), 4 up to 12 beats.
- **TimeSig tokens**: MidiTok REMI writes one after every `Bar`; they carry the meter the strength
  controls count beats in.
- **BPE off** in the shipped vocabulary: controls must stay separate tokens right after `Bar`, and the
  measured compression (BENCHMARKS.md) is modest for this resolution.

Control tokens (stages/tokens/controls.py computes them) are appended after MidiTok's vocabulary, so MidiTok's
ids are unchanged and PAD/BOS/EOS are 0/1/2. The tokenizer JSON (presets/tokenizer.json) holds the
config, the base vocabulary (checked on load, so a MidiTok upgrade cannot silently shift ids) and the
corpus statistics that calibrate the control classes; `Vocab.hash` is the sha256 of its canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from v2m.artifacts import sniff
from v2m.checkpoint import read_meta
from v2m.config import presets_dir
from v2m.errors import V2MError

TOKENIZER_FORMAT = "v2m.tokenizer"
TOKENIZER_VERSION = 1
DEFAULT_TEMPO_BPM = 120.0


@dataclass(frozen=True)
class TokenizerSpec:
    """The MidiTok part of the vocabulary. Beats are MidiTok beats (the time signature's denominator note)."""

    pitch_range: tuple[int, int] = (21, 109)
    beat_res: tuple[tuple[int, int, int], ...] = ((0, 4, 12), (4, 12, 4))  # (first beat, last beat, steps per beat)
    time_signatures: tuple[tuple[int, tuple[int, ...]], ...] = ((8, (3, 6, 9, 12)), (4, (1, 2, 3, 4, 5, 6)), (2, (1, 2, 3, 4)))

    def miditok_config(self):
        from miditok import TokenizerConfig

        return TokenizerConfig(
            pitch_range=tuple(self.pitch_range),
            beat_res={(a, b): r for a, b, r in self.beat_res},
            special_tokens=["PAD", "BOS", "EOS"],
            use_velocities=False,
            use_time_signatures=True,
            time_signature_range={d: list(n) for d, n in self.time_signatures},
            remove_duplicated_notes=True,
        )


def spec_from_json(obj: dict) -> TokenizerSpec:
    return TokenizerSpec(
        pitch_range=tuple(obj["pitch_range"]),
        beat_res=tuple(tuple(x) for x in obj["beat_res"]),
        time_signatures=tuple((int(d), tuple(n)) for d, n in obj["time_signatures"]),
    )


def spec_to_json(spec: TokenizerSpec) -> dict:
    return {"pitch_range": list(spec.pitch_range), "beat_res": [list(x) for x in spec.beat_res],
            "time_signatures": [[d, list(n)] for d, n in spec.time_signatures]}


def build_miditok(spec: TokenizerSpec):
    from miditok import REMI

    return REMI(spec.miditok_config())


def control_token_names(stats: dict) -> list[str]:
    """Names of the control tokens, in id order (appended after MidiTok's vocabulary)."""
    names = [f"Density_{i}" for i in range(int(stats["n_density"]))]
    names += [f"Strength_{i}" for i in range(3)]
    names += ["Phrase"]
    names += [f"TempoClass_{i}" for i in range(len(stats["tempo_bounds_bpm"]) + 1)]
    names += ["Mode_major", "Mode_minor"]
    return names


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Vocab:
    """MidiTok REMI + control tokens. Ids: MidiTok's first (PAD=0, BOS=1, EOS=2), then the controls."""

    spec: TokenizerSpec
    stats: dict
    base_names: list[str]
    miditok: Any = field(repr=False)

    # ------------------------------------------------------------ identity
    def to_json(self) -> dict:
        """The tokenizer as a plain JSON object (what presets/tokenizer.json, corpus indexes and checkpoints hold)."""
        return {"format": TOKENIZER_FORMAT, "version": TOKENIZER_VERSION, "kind": "miditok.REMI+v2m-controls",
                "config": spec_to_json(self.spec), "base_vocab": list(self.base_names),
                "controls": control_token_names(self.stats), "stats": self.stats}

    @cached_property
    def hash(self) -> str:
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()

    # ------------------------------------------------------------ ids
    @cached_property
    def names(self) -> list[str]:
        return list(self.base_names) + control_token_names(self.stats)

    def token_names(self) -> list[str]:
        """Token names in id order (e.g. 'Pitch_60', 'Density_3')."""
        return self.names

    @cached_property
    def ids(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    @property
    def vocab_size(self) -> int:
        return len(self.names)

    @property
    def n_base(self) -> int:
        return len(self.base_names)

    pad = property(lambda self: self.ids["PAD_None"])
    bos = property(lambda self: self.ids["BOS_None"])
    eos = property(lambda self: self.ids["EOS_None"])
    bar_id = property(lambda self: self.ids["Bar_None"])

    @property
    def special(self) -> dict[str, int]:
        return {"pad": self.pad, "bos": self.bos, "eos": self.eos}

    def is_control(self, token: int) -> bool:
        return self.n_base <= int(token) < len(self.names)

    @cached_property
    def control_ids(self) -> frozenset[int]:
        return frozenset(range(self.n_base, len(self.names)))

    def density_id(self, cls: int) -> int:
        return self.ids[f"Density_{min(max(int(cls), 0), int(self.stats['n_density']) - 1)}"]

    def strength_id(self, cls: int) -> int:
        return self.ids[f"Strength_{min(max(int(cls), 0), 2)}"]

    @property
    def phrase_id(self) -> int:
        return self.ids["Phrase"]

    def tempo_class_id(self, cls: int) -> int:
        return self.ids[f"TempoClass_{min(max(int(cls), 0), len(self.stats['tempo_bounds_bpm']))}"]

    def mode_id(self, mode: str) -> int:
        return self.ids["Mode_minor" if mode == "minor" else "Mode_major"]


# ---------------------------------------------------------------- loading

def default_tokenizer_path() -> Path:
    return presets_dir() / "tokenizer.json"


def load_tokenizer(obj_or_path: dict | str | Path | None = None) -> Vocab:
    """A Vocab from a tokenizer JSON object, a path to one or to a v2m model checkpoint (the tokenizer it records),
    or None (presets/tokenizer.json)."""
    if obj_or_path is None:
        obj_or_path = default_tokenizer_path()
    if isinstance(obj_or_path, str) and obj_or_path.lstrip().startswith("{"):
        obj_or_path = json.loads(obj_or_path)
    if not isinstance(obj_or_path, dict):
        path = Path(obj_or_path)
        if not path.is_file():
            raise V2MError(f"tokenizer {path}: no such file", "the default is presets/tokenizer.json; make one with "
                           "`v2m encode-tokens --source music21 --calibrate TOKENIZER.json`")
        raw = path.read_bytes()
        if sniff(raw[:64]) == "safetensors":  # a model checkpoint: the tokenizer it was trained with
            obj_or_path = read_meta(path).get("tokenizer")
            if not isinstance(obj_or_path, dict):
                raise V2MError(f"tokenizer {path}: a safetensors file without a v2m tokenizer in its metadata",
                               "pass a tokenizer JSON or a v2m model checkpoint")
        else:
            try:
                obj_or_path = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise V2MError(f"tokenizer {path}: not a tokenizer JSON or a v2m model ({type(e).__name__})",
                               "pass presets/tokenizer.json, another tokenizer JSON, or the model checkpoint itself")
            if not isinstance(obj_or_path, dict):
                raise V2MError(f"tokenizer {path}: expected a JSON object, found {type(obj_or_path).__name__}")
    obj = obj_or_path
    if obj.get("format") != TOKENIZER_FORMAT or obj.get("version") != TOKENIZER_VERSION:
        raise V2MError(f"not a {TOKENIZER_FORMAT} v{TOKENIZER_VERSION} object (found {obj.get('format')!r} v{obj.get('version')!r})")
    spec = spec_from_json(obj["config"])
    tokenizer = build_miditok(spec)
    base_names = [name for name, _ in sorted(tokenizer.vocab.items(), key=lambda kv: kv[1])]
    if base_names != list(obj["base_vocab"]):
        raise V2MError("the installed MidiTok builds a different vocabulary than this tokenizer JSON records",
                       "install the MidiTok version the tokenizer was made with (see pyproject.toml)")
    return Vocab(spec=spec, stats=obj["stats"], base_names=base_names, miditok=tokenizer)


def new_vocab(stats: dict, spec: TokenizerSpec | None = None) -> Vocab:
    """A Vocab for freshly calibrated `stats` (used by the corpus calibration)."""
    spec = spec or TokenizerSpec()
    tokenizer = build_miditok(spec)
    base_names = [name for name, _ in sorted(tokenizer.vocab.items(), key=lambda kv: kv[1])]
    return Vocab(spec=spec, stats=stats, base_names=base_names, miditok=tokenizer)


def check_hash(found: str | None, vocab: Vocab, what: str) -> None:
    """One clear line when an artifact was made with another tokenizer."""
    if found != vocab.hash:
        raise V2MError(f"{what} was made with another tokenizer (hash {str(found)[:12]}…, this one is {vocab.hash[:12]}…)",
                       "re-encode it with this tokenizer, or pass the matching --tokenizer")


# ---------------------------------------------------------------- score preparation

def merge_tracks(score):
    """All pitched notes of `score` in one track (program 0); drums dropped. Ticks and tpq unchanged."""
    import numpy as np
    import symusic

    out = symusic.Score(score.ticks_per_quarter)
    out.time_signatures = score.time_signatures
    out.tempos = score.tempos
    track = symusic.Track("music", 0, False)
    arrays = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    if arrays:
        merged = {k: np.concatenate([a[k] for a in arrays]) for k in ("time", "duration", "pitch", "velocity")}
        order = np.lexsort((merged["pitch"], merged["time"]))
        track.notes = symusic.Note.from_numpy(*(merged[k][order] for k in ("time", "duration", "pitch", "velocity")))
    out.tracks = [track]
    return out


def prepare_score(score, vocab: Vocab):
    """The score as the tokenizer sees it: one merged track, resampled to MidiTok's grid, notes quantised."""
    return vocab.miditok.preprocess_score(merge_tracks(score))


def base_tokens(prepared, vocab: Vocab) -> list[int]:
    """MidiTok ids (no BOS/EOS, no controls) of a prepared score; [] when it has no notes."""
    if not prepared.tracks or not len(prepared.tracks[0].notes):
        return []
    seqs = vocab.miditok.encode(prepared, no_preprocess_score=True)
    seq = seqs[0] if isinstance(seqs, list) else seqs
    return list(seq.ids)


def strip_controls(ids, vocab: Vocab) -> list[int]:
    """MidiTok ids only: control tokens and PAD/BOS/EOS removed, cut at the first EOS."""
    out: list[int] = []
    for token in ids:
        token = int(token)
        if token == vocab.eos:
            break
        if token in (vocab.pad, vocab.bos) or vocab.is_control(token):
            continue
        if not 0 <= token < vocab.n_base:
            raise V2MError(f"token id {token} is outside this tokenizer's vocabulary (size {len(vocab)})",
                           "the tokens were made with another tokenizer")
        out.append(token)
    return out


def tempo_class_centre(cls: int, stats: dict) -> float:
    """A representative tempo (bpm) for a tempo class: the midpoint of its bounds."""
    bounds = [40.0] + list(stats["tempo_bounds_bpm"]) + [200.0]
    return round((bounds[cls] + bounds[cls + 1]) / 2, 1)
