"""Fuzzing the artifact readers through the command line: valid seed artifacts of every kind, mutations of them as a
hostile user or a broken script would make, and one run of `v2m` in-process per mutant, classified.

Shared by the Hypothesis test (tests/core/test_fuzz_readers.py, a few seconds) and the long run
(bench/fuzz_artifacts.py, ≥ 10⁴ mutants per kind). A mutant must end in exit 0 with its output written, or in one
`v2m: error:` line with exit 1 and nothing written; an `internal error`, a traceback, another exit code, a stray
file or a run past the time limit is a finding.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import random
import signal
from dataclasses import dataclass
from pathlib import Path

KINDS = ("rhythm", "controls", "tokens", "report", "corpus")

# values a hostile edit puts in place of a field: wrong types, out of range, non-finite, huge, paths
NASTY = [None, True, False, 0, -1, 1, 2, 3, 17, 255, 10**9, -10**9, 2**63, 10**400, 0.0, -0.0, 0.5, -0.001, 1e-9,
         1e308, -1e308, math.nan, math.inf, -math.inf, "", "x", "1.5", "NaN", "/etc/passwd", "../../x.safetensors",
         "concat:/etc/passwd", "-clip.mp4", "pop", "major", "video", [], [0], [1.0, 0.5], [None], ["a"], {}, {"a": 1},
         [[1, 2]], "é" * 5]


def nasty(rng: random.Random):
    value = rng.choice(NASTY)
    return copy.deepcopy(value)


# ---------------------------------------------------------------- seeds

def rhythm_data(duration: float = 6.0, bpm: float = 120.0, meter: int = 4, frame_rate: float = 30.0) -> dict:
    """A small valid v2m.rhythm payload (docs/ARTIFACTS.md): a regular pulse with an envelope peak on each beat."""
    period = 60.0 / bpm
    beats = [round(0.25 + i * period, 3) for i in range(int((duration - 0.3) / period))]
    n = round(duration * frame_rate)
    envelope = [0.0] * n
    for b in beats:
        i = round(b * frame_rate)
        for j, v in zip(range(i - 1, i + 2), (0.5, 1.0, 0.5)):
            if 0 <= j < n:
                envelope[j] = v
    return {"kind": "video", "duration": duration, "source_fps": 30.0, "frame_rate": frame_rate, "method": "diff",
            "envelope": envelope,
            "tempo": {"bpm": bpm, "confidence": 0.9, "half": bpm / 2, "double": bpm * 2, "source": "estimated",
                      "planned": 0.0},
            "beats": beats, "beat_strength": [1.0] * len(beats), "meter": meter, "downbeats": beats[::meter],
            "cuts": [2.0], "scenes": [{"start": 0.0, "end": duration, "bpm": bpm, "confidence": 0.9, "meter": meter,
                                       "sync": "pulse"}],
            "segments": [{"start": 0.0, "end": 2.0, "motion": 0.4, "brightness": 0.6, "saturation": 0.5},
                         {"start": 2.0, "end": duration, "motion": 0.7, "brightness": 0.5, "saturation": 0.5}]}


@dataclass(frozen=True)
class Seed:
    """A valid artifact of one kind (`data`: its parsed JSON), where mutants go, and the command that reads one."""

    kind: str
    artifact: dict
    filename: str  # the mutant's file name (corpus: index.json inside a copy of the corpus folder)
    argv: tuple    # the command, with {IN} and {OUT} placeholders


def make_seeds(folder: Path) -> dict[str, Seed]:
    """One valid artifact per kind, made with v2m's own stages into `folder` (a few seconds)."""
    from tests.models.corpus import make_corpus
    from tests.models.corpus import tokenizer as corpus_tokenizer
    from tests.models.helpers import tiny_model
    from tests.music import midi_bytes, song
    from v2m import artifacts
    from v2m.models.loading import save_model
    from v2m.stages.arrange.arranger import arrangement_settings
    from v2m.stages.tokens.encode import encode_file

    folder.mkdir(parents=True, exist_ok=True)
    rhythm = artifacts.make_artifact("v2m.rhythm", rhythm_data(), stage="extract-rhythm",
                                     source={"name": "clip.mp4", "sha256": "0" * 64})
    rhythm_path = folder / "seed.rhythm.json"
    artifacts.atomic_write_bytes(rhythm_path, artifacts.dumps(rhythm))
    controls = encode_file(str(rhythm_path))
    midi = folder / "song.mid"
    midi.write_bytes(midi_bytes(song()[0]))
    tokens = encode_file(str(midi))
    tokens["data"]["controls"] = copy.deepcopy(controls["data"])
    tokens["data"]["arrange"] = arrangement_settings("pop", seed=0)
    tokens["data"]["samples"] = [tokens["data"]["ids"][: len(tokens["data"]["ids"]) // 2]]
    report = artifacts.make_artifact("v2m.report", {
        "mode": "rhythm", "metrics": {"beat_f1": 0.5, "bcs": None, "notes": 12.0}, "labels": {"tempo_relation": "same"},
        "gates": [{"gate": "beat_f1<0.8", "value": 0.5, "failed": True, "detail": "0.5 < 0.8"}]}, stage="evaluate")
    corpus = make_corpus(folder / "corpus", pieces=(6, 2, 2))
    tok, tok_hash = corpus_tokenizer()
    model = tiny_model()
    model_path = folder / "tiny.safetensors"
    save_model(model_path, model, model.config, tok, tok_hash, {"steps": 0}, force=True)
    index = json.loads((corpus / "index.json").read_text())
    midi_arg = str(midi)
    return {
        "rhythm": Seed("rhythm", rhythm, "r.json", ("encode-tokens", "{IN}", "-o", "{OUT}.json")),
        "controls": Seed("controls", controls, "c.json", ("evaluate", "{IN}", midi_arg, "-o", "{OUT}.json")),
        "tokens": Seed("tokens", tokens, "t.json", ("decode", "{IN}", "-o", "{OUT}.mid")),
        "report": Seed("report", report, "rep.json", ("evaluate", "{IN}", midi_arg, "-o", "{OUT}.json")),
        "corpus": Seed("corpus", index, "index.json", ("evaluate", "--model", str(model_path), "--corpus", "{DIR}",
                                                       "--split", "train", "--max-tokens", "256", "--no-speed",
                                                       "-o", "{OUT}.json")),
    }


# ---------------------------------------------------------------- mutations

def _nodes(obj, path=()):
    """Every (path, value) in a JSON tree; long lists contribute a few of their items, not all."""
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _nodes(value, path + (key,))
    elif isinstance(obj, list):
        picks = range(len(obj)) if len(obj) <= 8 else sorted({0, 1, 2, len(obj) // 2, len(obj) - 2, len(obj) - 1})
        for i in picks:
            yield from _nodes(obj[i], path + (i,))


def _get(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def _set(obj, path, value):
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def mutate(artifact: dict, rng: random.Random, edits: int = 1) -> bytes:
    """The bytes of a mutant of `artifact`: `edits` structural edits (a field replaced, deleted, scaled, a list
    reversed, shuffled, emptied, grown, an item duplicated), or damaged bytes (truncated, flipped)."""
    obj = copy.deepcopy(artifact)
    for _ in range(edits):
        nodes = list(_nodes(obj))
        path, value = rng.choice(nodes)
        op = rng.random()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and op < 0.5:
            factor = rng.choice([-1, 0, 0.5, 2, 10, 1000, 1e6, 1e300, -1e-9])
            try:
                changed = value * factor if rng.random() < 0.7 else value + rng.choice([-1, 1, 0.001])
            except OverflowError:  # an int past float's range (an earlier edit put 10**400 there)
                changed = nasty(rng)
            obj = _set(obj, path, changed)
        elif isinstance(value, list) and value and op < 0.6:
            choice = rng.randrange(6)
            if choice == 0:
                value.reverse()
            elif choice == 1:
                rng.shuffle(value)
            elif choice == 2:
                del value[rng.randrange(len(value)):]
            elif choice == 3:
                i = rng.randrange(len(value))
                value.insert(i, copy.deepcopy(value[i]))
            elif choice == 4:
                value[:] = [value[0]] * len(value)  # a flat grid
            else:
                value.extend(copy.deepcopy(value[-1:]) * rng.choice([1, 10, 1000]))
        elif isinstance(value, dict) and value and op < 0.5:
            del value[rng.choice(sorted(value))]
        elif path:
            obj = _set(obj, path, nasty(rng))
    text = json.dumps(obj, allow_nan=True, separators=(",", ":")).encode()
    if rng.random() < 0.1:  # damaged bytes: truncated or a byte flipped
        data = bytearray(text)
        if rng.random() < 0.5:
            data = data[: rng.randrange(len(data))]
        else:
            data[rng.randrange(len(data))] = rng.randrange(256)
        text = bytes(data)
    return text


# ---------------------------------------------------------------- one run

class Hang(Exception):
    pass


@dataclass(frozen=True)
class Outcome:
    """How one mutant ended: `accepted` (exit 0, output written), `refused` (one `v2m: error:` line, exit 1,
    nothing written), or a finding: `internal` (internal error or an escaped exception), `hang`, `bad-refusal`
    (another exit code, several lines, or files left on refusal), `no-output` (exit 0 without the output),
    `clobbered` (the input file changed)."""

    kind: str
    message: str


def _alarm(signum, frame):
    raise Hang()


def run_mutant(seed: Seed, data: bytes, work: Path, timeout: float = 20.0) -> Outcome:
    """Write the mutant into `work` (a fresh folder; for a corpus, beside a copy of its shards) and run the seed's
    command on it through `v2m.cli.main.main`, in this process."""
    from v2m.cli.main import main

    target = work / seed.filename
    target.write_bytes(data)
    out = work / "out"
    argv = [a.replace("{IN}", str(target)).replace("{OUT}", str(out)).replace("{DIR}", str(work)) for a in seed.argv]
    written = [a for a in argv if a.startswith(str(out))]
    before = set(work.iterdir())
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except Hang:
        return Outcome("hang", f"no answer in {timeout:.0f} s")
    except BaseException as e:  # noqa: BLE001 - main() must turn everything into an exit code
        return Outcome("internal", f"escaped {type(e).__name__}: {e}"[:300])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    lines = [line for line in err.getvalue().splitlines() if line.startswith("v2m: ")]
    if any("internal error" in line for line in lines) or "Traceback" in err.getvalue():
        return Outcome("internal", next((line for line in lines if "internal error" in line), err.getvalue()[-300:]))
    after = set(work.iterdir())
    if target.read_bytes() != data:
        return Outcome("clobbered", f"exit {code}: the input {target.name} was changed")
    if code == 0:
        missing = [w for w in written if not Path(w).exists()]
        return Outcome("no-output", f"exit 0 without {missing}") if missing else Outcome("accepted", "")
    errors = [line for line in lines if line.startswith("v2m: error: ")]
    if code != 1 or len(errors) != 1:
        return Outcome("bad-refusal", f"exit {code}: {err.getvalue()[-300:]}")
    if after != before:
        return Outcome("bad-refusal", f"refused but wrote {sorted(p.name for p in after - before)}")
    return Outcome("refused", errors[0])
