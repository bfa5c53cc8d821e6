"""The schema checker (v2m.schema) and the shipped schemas: each keyword, the one-line error, the limits agreeing."""

import json
import math

import pytest

from v2m import artifacts, limits
from v2m.errors import V2MError
from v2m.schema import SCHEMA_FILES, SchemaError, load_schema, validate


def rhythm_data(**changes) -> dict:
    beats = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    data = {"kind": "video", "duration": 4.0, "source_fps": 25.0, "frame_rate": 10.0, "method": "diff",
            "envelope": [0.0] * 40, "tempo": {"bpm": 120.0, "confidence": 0.9, "source": "estimated"},
            "beats": beats, "beat_strength": [1.0] * 6, "meter": 2, "downbeats": beats[::2], "cuts": [1.2],
            "segments": [{"start": 0.0, "end": 4.0, "motion": 0.5, "brightness": 0.5, "saturation": 0.5}]}
    data.update(changes)
    return data


def problem(data: dict, fmt: str = "v2m.rhythm") -> str:
    raw = artifacts.dumps(artifacts.make_artifact(fmt, data, stage="tests")) if fmt else data
    with pytest.raises(V2MError) as info:
        artifacts.parse_artifact(raw, "r.json", fmt)
    return info.value.message


def test_a_valid_rhythm_reads():
    raw = artifacts.dumps(artifacts.make_artifact("v2m.rhythm", rhythm_data(), stage="tests"))
    assert artifacts.parse_artifact(raw, "r.json", "v2m.rhythm")["data"]["meter"] == 2


@pytest.mark.parametrize("changes,expected", [
    ({"beats": [0.5, 1.0, 0.9, 2.0]}, "r.json: data.beats[2]: not increasing"),
    ({"beats": [0.5, 1.0, 1.0, 2.0]}, "r.json: data.beats[2]: not increasing"),
    ({"beats": [0.5, 0.51, 1.0]}, "data.beats[1]: 0.01 s after the one before, closer than 0.05 s"),
    ({"beats": [-1.0, 1.0]}, "data.beats[0]: -1.0 is below the minimum 0"),
    ({"beats": "1,2,3"}, "data.beats: expected array, found string"),
    ({"beats": [0.5, "1.0"]}, "data.beats[1]: expected number, found string"),
    ({"meter": 0}, "data.meter: 0 is below the minimum 1"),
    ({"meter": 10**9}, "data.meter: 1000000000 is above the maximum 16"),
    ({"meter": 4.5}, "data.meter: expected an integer, found 4.5"),
    ({"meter": True}, "data.meter: expected integer, found boolean"),
    ({"frame_rate": 0}, "data.frame_rate: 0 must be greater than 0"),
    ({"duration": 1e308}, "data.duration: 1e+308 is above the maximum 10800"),
    ({"kind": "picture"}, 'data.kind: expected one of "video", "audio", found "picture"'),
    ({"downbeats": [0.5, 1.2]}, "data.downbeats[1]: 1.2 is not one of the beats"),
    ({"beat_strength": [1.0]}, "data.beat_strength: 1 values for 6 beats"),
    ({"envelope": [0.0] * 100}, "data.envelope: 100 frames, more than duration × frame_rate (40)"),
    ({"segments": [{"start": 0.0}]}, "data.segments[0].end: missing"),
])
def test_the_first_problem_is_one_line_naming_the_field(changes, expected):
    message = problem(rhythm_data(**changes))
    assert expected in message and "\n" not in message


def test_missing_field_and_non_finite_numbers():
    data = rhythm_data()
    del data["frame_rate"]
    assert "data.frame_rate: missing" in problem(data)
    raw = artifacts.dumps(artifacts.make_artifact("v2m.rhythm", rhythm_data(), stage="tests"))
    for bad in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(V2MError, match=r"data.duration: expected number, found (NaN|Infinity|-Infinity)"):
            artifacts.parse_artifact(raw.replace(b'"duration":4.0', b'"duration":' + bad), "r.json", "v2m.rhythm")


def test_a_grid_that_would_grow_past_the_limit_is_refused():
    message = problem(rhythm_data(duration=10000.0, beats=[0.5, 0.55], downbeats=[0.5], beat_strength=[1, 1],
                                  envelope=[]))
    assert "data.beats: the beat grid continued to the duration has" in message


def test_deep_json_is_one_line():
    with pytest.raises(V2MError, match="nested too deeply"):
        artifacts.parse_artifact(b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}", "x.json", "v2m.rhythm")


def test_corpus_shards_cannot_name_a_path():
    data = {"tokenizer": {}, "tokenizer_hash": "x", "vocab_size": 48, "special": {"pad": 0, "bos": 1, "eos": 2},
            "splits": {"train": {"shards": ["../../etc/passwd.safetensors"], "pieces": 1, "tokens": 3}}}
    assert "data.splits.train.shards[0]" in problem(data, "v2m.corpus")
    data["splits"]["train"]["shards"] = ["train-00000.safetensors"]
    data["special"]["eos"] = 48
    assert "data.special.eos: id 48 is outside the vocabulary (48 ids)" in problem(data, "v2m.corpus")


def test_tokens_arrange_settings_must_be_an_object():
    data = {"tokenizer_hash": "x", "ids": [1, 2], "arrange": {"style": "pop", "seed": 0, "settings": "/etc/passwd"}}
    assert "data.arrange.settings: expected object, found string" in problem(data, "v2m.tokens")


@pytest.mark.parametrize("schema,good,bad", [
    ({"type": "integer"}, 3, 3.0),
    ({"type": "number", "exclusiveMaximum": 1}, 0.5, 1),
    ({"type": "string", "maxLength": 2}, "ab", "abc"),
    ({"type": "string", "pattern": "^a"}, "ab", "ba"),
    ({"type": "array", "minItems": 1}, [1], []),
    ({"type": "object", "additionalProperties": False, "properties": {"a": {}}}, {"a": 1}, {"b": 1}),
    ({"type": "object", "maxProperties": 1}, {"a": 1}, {"a": 1, "b": 2}),
    ({"anyOf": [{"type": "null"}, {"type": "integer"}]}, None, "x"),
    ({"const": 1}, 1, True),
    ({"enum": [1, 2]}, 2, True),
    ({"type": "array", "x-increasing": "strict"}, [1, 2], [2, 1]),
])
def test_each_keyword_accepts_and_refuses(schema, good, bad):
    validate(good, schema)
    with pytest.raises(SchemaError):
        validate(bad, schema)


def test_schemas_are_json_schema_documents_with_the_limits():
    for fmt in SCHEMA_FILES:
        schema = load_schema(fmt)
        assert schema["$id"] == fmt and schema["properties"]["format"] == {"const": fmt}
    rhythm, controls, tokens = (load_schema(f)["$defs"] for f in ("v2m.rhythm", "v2m.controls", "v2m.tokens"))
    assert rhythm["meter"]["maximum"] == limits.MAX_METER and rhythm["time"]["maximum"] == limits.MAX_DURATION
    assert rhythm["grid"]["maxItems"] == limits.MAX_BEATS and rhythm["grid"]["x-minGap"] == limits.MIN_BEAT_GAP
    assert controls["controls"]["properties"]["bars"]["maxItems"] == limits.MAX_BARS
    assert tokens["ids"]["maxItems"] == limits.MAX_TOKENS
    assert load_schema("v2m.tokens")["properties"]["data"]["properties"]["samples"]["maxItems"] == limits.MAX_SAMPLES
    assert not math.isinf(json.loads(json.dumps(limits.MAX_DURATION)))
