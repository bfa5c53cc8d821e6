"""Checking artifacts against their schemas: the JSON Schema files shipped in `v2m/schemas/`, one per kind.

Every JSON artifact is untrusted input (users and scripts edit, generate and pass them around), so readers check
it whole before any work (`artifacts.parse_artifact` calls `check_artifact`), and the first problem is one line
naming the field: `r.json: data.beats[3]: not increasing`.

The checker reads a subset of JSON Schema (draft 2020-12), written once here so v2m needs no validator library:
`type`, `enum`, `const`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`,
`pattern`, `minItems`, `maxItems`, `items`, `properties`, `required`, `additionalProperties`, `maxProperties`,
`anyOf`, `$ref` (to `#/$defs/...`) and `$defs`. Two differences from the standard, both stricter: `number` is a
*finite* number (Python's json reads NaN and Infinity), and `integer` is an integer written without a fraction
(`3`, not `3.0`), never a boolean. Two v2m keywords say what JSON Schema cannot: `x-increasing` (`"strict"`: each
number of the array is greater than the one before) and `x-minGap` (a strictly increasing array's smallest step,
so a grid continued at its last step always makes progress). Checks across fields (downbeats among the beats, one
strength per beat of a bar) are in `cross_checks`. Unknown keys in `data` are allowed and ignored, so an artifact
from a newer v2m with an extra field still reads; a known field with a wrong type or value never does.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

from .errors import V2MError
from .limits import MAX_GRID_BEATS

# artifact format → schema file in v2m/schemas/
SCHEMA_FILES = {
    "v2m.rhythm": "rhythm.schema.json",
    "v2m.controls": "controls.schema.json",
    "v2m.tokens": "tokens.schema.json",
    "v2m.report": "report.schema.json",
    "v2m.corpus": "corpus.schema.json",
}


class SchemaError(Exception):
    """The first place an object breaks its schema: `where` (e.g. `data.beats[3]`) and what is wrong there."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@functools.cache
def load_schema(fmt: str) -> dict:
    """The shipped schema of an artifact format (a KeyError for a format without one)."""
    text = resources.files("v2m").joinpath("schemas", SCHEMA_FILES[fmt]).read_text(encoding="utf-8")
    return json.loads(text)


def check_artifact(obj: dict, fmt: str, name: str) -> None:
    """Check a parsed artifact against its kind's schema and cross-field rules; the first problem is a V2MError
    `NAME: FIELD: PROBLEM`."""
    try:
        schema = load_schema(fmt)
        validate(obj, schema, root=schema)
        checks = CROSS_CHECKS.get(fmt)
        if checks is not None:
            checks(obj["data"])
    except SchemaError as e:
        raise V2MError(f"{name}: {e.where}: {e.problem}", f"re-create it with the command that makes a {fmt}") from None


# ---------------------------------------------------------------- the JSON Schema subset

def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else "non-finite number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is(value: Any, wanted: str) -> bool:
    found = _type_name(value)
    return found == wanted or (wanted == "number" and found == "integer")


def _show(value: Any) -> str:
    text = json.dumps(value, allow_nan=True) if _type_name(value) not in ("array", "object") else _type_name(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _child(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def validate(value: Any, schema: dict, where: str = "", root: dict | None = None) -> None:
    """Raise SchemaError at the first place `value` breaks `schema` (the subset above); `root` resolves `$ref`."""
    root = root if root is not None else schema
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"schema: only local $defs references are supported, not {ref}")
        schema = root["$defs"][ref[len("#/$defs/"):]]
    if "anyOf" in schema:
        errors: list[SchemaError] = []
        for option in schema["anyOf"]:
            try:
                validate(value, option, where, root)
                break
            except SchemaError as e:
                errors.append(e)
        else:  # the deepest problem says most (the option whose type fitted, then failed inside)
            raise max(errors, key=lambda e: len(e.where))
    wanted = schema.get("type")
    if wanted is not None:
        options = [wanted] if isinstance(wanted, str) else wanted
        if not any(_is(value, option) for option in options):
            found = _type_name(value)
            if found == "number" and "integer" in options:
                raise SchemaError(where or "(top)", f"expected an integer, found {_show(value)}")
            raise SchemaError(where or "(top)", f"expected {' or '.join(options)}, found {found if found != 'non-finite number' else _show(value)}")
    if "const" in schema and (value != schema["const"] or _type_name(value) != _type_name(schema["const"])):
        raise SchemaError(where, f"expected {_show(schema['const'])}, found {_show(value)}")
    if "enum" in schema and (value not in schema["enum"] or isinstance(value, bool) != any(isinstance(e, bool) for e in schema["enum"])):
        raise SchemaError(where, f"expected one of {', '.join(_show(e) for e in schema['enum'])}, found {_show(value)}")
    if _type_name(value) in ("integer", "number"):
        _check_number(value, schema, where)
    elif isinstance(value, str):
        _check_string(value, schema, where)
    elif isinstance(value, list):
        _check_array(value, schema, where, root)
    elif isinstance(value, dict):
        _check_object(value, schema, where, root)


def _check_number(value: float, schema: dict, where: str) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        raise SchemaError(where, f"{_show(value)} is below the minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise SchemaError(where, f"{_show(value)} is above the maximum {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        raise SchemaError(where, f"{_show(value)} must be greater than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        raise SchemaError(where, f"{_show(value)} must be less than {schema['exclusiveMaximum']}")


@functools.cache
def _pattern(text: str) -> re.Pattern:
    return re.compile(text)


def _check_string(value: str, schema: dict, where: str) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        raise SchemaError(where, f"shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise SchemaError(where, f"longer than {schema['maxLength']} characters")
    if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
        raise SchemaError(where, f"{_show(value)} does not match {schema['pattern']}")


def _check_array(value: list, schema: dict, where: str, root: dict) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        raise SchemaError(where, f"{len(value)} items, expected at least {schema['minItems']}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        raise SchemaError(where, f"{len(value)} items, more than the limit of {schema['maxItems']}")
    items = schema.get("items")
    if items is not None:
        if items.get("type") == "number" and len(items) == 1 + ("minimum" in items) + ("maximum" in items):
            _check_numbers(value, items, where)  # the long arrays (envelopes, beat times): one fast loop
        else:
            for i, item in enumerate(value):
                validate(item, items, _child(where, i), root)
    if schema.get("x-increasing") == "strict":
        gap = schema.get("x-minGap", 0.0)
        for i in range(1, len(value)):
            if not value[i] > value[i - 1]:
                raise SchemaError(_child(where, i), "not increasing")
            if value[i] - value[i - 1] < gap:
                raise SchemaError(_child(where, i), f"{value[i] - value[i - 1]:.6g} s after the one before, "
                                                    f"closer than {gap} s")


def _check_numbers(values: list, items: dict, where: str) -> None:
    low, high = items.get("minimum", -math.inf), items.get("maximum", math.inf)
    for i, v in enumerate(values):
        if v.__class__ is float:
            if low <= v <= high:
                continue
        elif v.__class__ is int and low <= v <= high:
            continue
        validate(v, items, _child(where, i))  # the slow path words the problem


def _check_object(value: dict, schema: dict, where: str, root: dict) -> None:
    for key in schema.get("required", ()):
        if key not in value:
            raise SchemaError(_child(where, key), "missing")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        raise SchemaError(where, f"{len(value)} keys, more than the limit of {schema['maxProperties']}")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            validate(item, properties[key], _child(where, key), root)
        elif extra is False:
            raise SchemaError(_child(where, key), "not a known field")
        elif isinstance(extra, dict):
            validate(item, extra, _child(where, key), root)


# ---------------------------------------------------------------- rules across fields

def _subset(small: list, big: list, where: str, what: str) -> None:
    known = set(big)
    for i, t in enumerate(small):
        if t not in known:
            raise SchemaError(f"{where}[{i}]", f"{t} is not one of the {what}")


def _rhythm(data: dict) -> None:
    beats = data.get("beats") or []
    strength = data.get("beat_strength")
    if strength is not None and len(strength) not in (0, len(beats)):
        raise SchemaError("data.beat_strength", f"{len(strength)} values for {len(beats)} beats")
    _subset(data.get("downbeats") or [], beats, "data.downbeats", "beats")
    duration = data["duration"]
    if beats and beats[-1] > duration + 1.0:
        raise SchemaError(f"data.beats[{len(beats) - 1}]", f"{beats[-1]} s is past the duration ({duration} s)")
    if len(beats) >= 2:  # the grid music_grid makes: continued at the first and last beat period to 0 s and the end
        head, tail = beats[1] - beats[0], beats[-1] - beats[-2]
        grid = len(beats) + beats[0] / head + max(duration - beats[-1], 0.0) / tail
        if grid > MAX_GRID_BEATS:
            raise SchemaError("data.beats", f"the beat grid continued to the duration has {grid:.0f} beats, more than "
                                            f"the limit of {MAX_GRID_BEATS}")
    envelope = data.get("envelope") or []
    if len(envelope) > duration * data["frame_rate"] + 2:
        raise SchemaError("data.envelope", f"{len(envelope)} frames, more than duration × frame_rate "
                                           f"({duration * data['frame_rate']:.0f})")


def _bars(bars: list, meter: int, where: str) -> None:
    starts = [bar.get("start", 0.0) for bar in bars]
    for i, bar in enumerate(bars):
        beats = bar.get("beats", meter)
        if len(bar["strength"]) != beats and bar["strength"] != [0]:
            raise SchemaError(f"{where}[{i}].strength", f"{len(bar['strength'])} values for {beats} beats")
        if i and "start" in bar and not starts[i] > starts[i - 1]:
            raise SchemaError(f"{where}[{i}].start", "not increasing")


def _controls(data: dict, where: str = "data", partial: bool = False) -> None:
    """A controls payload's bars against its grid. `partial`: the controls a tokens artifact carries, which may
    hold only the bars (a score's own controls), so an absent grid is no error there."""
    bars = data.get("bars") or []
    _bars(bars, data.get("meter", 4), f"{where}.bars")
    downbeats, beats = data.get("downbeats") or [], data.get("beat_times") or []
    if bars and (downbeats or not partial) and len(downbeats) != len(bars):
        raise SchemaError(f"{where}.downbeats", f"{len(downbeats)} downbeats for {len(bars)} bars")
    if beats:
        _subset(downbeats, beats, f"{where}.downbeats", "beat_times")


def _tokens(data: dict) -> None:
    if data.get("controls") is not None:
        _controls(data["controls"], "data.controls", partial=True)
    if data.get("downbeats") is not None and data.get("beat_times") is None:
        raise SchemaError("data.beat_times", "missing (downbeats are given)")


def _corpus(data: dict) -> None:
    for key, token in (data.get("special") or {}).items():
        if token >= data["vocab_size"]:
            raise SchemaError(f"data.special.{key}", f"id {token} is outside the vocabulary ({data['vocab_size']} ids)")


CROSS_CHECKS: dict[str, Callable[[dict], None]] = {
    "v2m.rhythm": _rhythm,
    "v2m.controls": _controls,
    "v2m.tokens": _tokens,
    "v2m.corpus": _corpus,
}
