"""The bad-input table (issue 19): well-formed files with wrong content, hostile paths, outputs that are inputs,
requests for unbounded work, dishonest media — across the stages. Each case must end in one `v2m: error:` line on
stderr with exit 1, write nothing, and leave every file in the folder byte-identical (sha256 before and after).

The ffmpeg path cases that must *work* (`-clip.mp4`, `a:b.mp4`, a `concat:` folder) are below the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.fuzz import make_seeds
from tests.media import needs_fluidsynth, truncated, video
from v2m import artifacts
from v2m.cli.main import main

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Valid inputs of every kind (tests/fuzz.py's seeds), a video, and the files the cases start from."""
    base = tmp_path_factory.mktemp("bad")
    seeds = make_seeds(base / "seeds")
    for seed in seeds.values():
        if seed.kind != "corpus":
            write_json(base / f"{seed.kind}.json", seed.artifact)
    shutil.copytree(base / "seeds" / "corpus", base / "corpus")
    shutil.copy(base / "seeds" / "tiny.safetensors", base / "tiny.safetensors")
    shutil.copy(base / "seeds" / "song.mid", base / "song.mid")
    video(base, "clip.mp4", duration=6.0, width=160, height=96)  # as long as the music
    (base / "clip.mp4.truth.json").unlink()
    (base / "notes.txt").write_text("not a soundfont, not a video\n")
    shutil.rmtree(base / "seeds")
    return base


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, allow_nan=True, separators=(",", ":")))
    return path


def edited(folder: Path, kind: str, name: str, edit) -> Path:
    """A copy of the valid `kind` artifact with `edit(obj)` applied, as `name` in `folder`."""
    obj = json.loads((folder / f"{kind}.json").read_text())
    edit(obj)
    return write_json(folder / name, obj)


def setp(path: str, value):
    """An edit that sets data.<path> (dots and [i]) to `value`."""
    def edit(obj):
        keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
        node = obj["data"]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


def delete(path: str):
    def edit(obj):
        del obj["data"][path]
    return edit


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and link under `folder` (relative path → sha256, or the link's target)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


# ---------------------------------------------------------------- the cases: (id, setup(folder) -> argv, expected)

def rhythm_case(name, edit, expected):
    return (name, lambda f: ["encode-tokens", str(edited(f, "rhythm", f"{name}.json", edit)), "-o", str(f / "out.json")],
            expected)


def tokens_case(name, edit, expected):
    return (name, lambda f: ["decode", str(edited(f, "tokens", f"{name}.json", edit)), "-o", str(f / "out.mid")],
            expected)


def controls_case(name, edit, expected):
    return (name, lambda f: ["generate", str(edited(f, "controls", f"{name}.json", edit)), "-o", str(f / "out.json")],
            expected)


def raw_rhythm(name, old: str, new: str, expected):
    """A rhythm whose JSON text is edited (NaN, Infinity: what json.dumps would not write)."""
    def setup(f):
        text = (f / "rhythm.json").read_text()
        assert old in text
        (f / f"{name}.json").write_text(text.replace(old, new, 1))
        return ["encode-tokens", str(f / f"{name}.json"), "-o", str(f / "out.json")]
    return (name, setup, expected)


def many_ids(obj):
    obj["data"]["ids"] = obj["data"]["ids"][:1] * ((1 << 20) + 1)


def reversed_beats(obj):
    obj["data"]["beats"] = obj["data"]["beats"][::-1]


def flat_beats(obj):
    obj["data"]["beats"] = [1.0] * len(obj["data"]["beats"])


def long_grid(obj):
    obj["data"].update(duration=10000.0, beats=[0.5, 0.55], beat_strength=[1.0, 1.0], downbeats=[0.5], envelope=[])


def corpus_case(name, edit, expected):
    def setup(f):
        corpus = f / f"{name}-corpus"
        shutil.copytree(f / "corpus", corpus)
        index = json.loads((corpus / "index.json").read_text())
        edit(index)
        write_json(corpus / "index.json", index)
        return ["evaluate", "--model", str(f / "tiny.safetensors"), "--corpus", str(corpus), "--split", "train",
                "--no-speed", "-o", str(f / "out.json")]
    return (name, setup, expected)


def model_case(name, changes, expected):
    def setup(f):
        raw = (f / "tiny.safetensors").read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        config = json.loads(header["__metadata__"]["config"])
        config.update(changes)
        header["__metadata__"]["config"] = json.dumps(config)
        text = json.dumps(header).encode()
        (f / f"{name}.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
        return ["quantize", str(f / f"{name}.safetensors"), "-o", str(f / "out.safetensors")]
    return (name, setup, expected)


def symlink_to(target: str, name: str, argv):
    def setup(f):
        link = f / name
        if not link.is_symlink():
            link.symlink_to(f / target)
        return argv(f)
    return setup


def hardlink_to(target: str, name: str, argv):
    def setup(f):
        link = f / name
        if not link.exists():
            os.link(f / target, link)
        return argv(f)
    return setup


def twins(f):
    """a.mp4 and a.mov in one folder: both would write OUT/a.*"""
    twin = f / "twins"
    twin.mkdir(exist_ok=True)
    for name in ("a.mp4", "a.mov"):
        if not (twin / name).exists():
            shutil.copy(f / "clip.mp4", twin / name)
    return ["run", str(twin), "-o", str(f / "twins-out")]


def nested(f):
    """a folder whose only video is inside the output folder: an output of an earlier run, never an input"""
    nest = f / "nest" / "scored"
    nest.mkdir(parents=True, exist_ok=True)
    if not (nest / "clip.mp4").exists():
        shutil.copy(f / "clip.mp4", nest / "clip.mp4")
    return ["run", str(f / "nest"), "-o", str(nest)]


def truncated_video(f):
    if not (f / "cut.mp4").exists():
        truncated(f / "clip.mp4", f, "cut.mp4", keep=0.3)
    return ["decode", str(f / "tokens.json"), "-o", str(f / "out.mp4"), "--video", str(f / "cut.mp4")]


def short_video(f):
    import subprocess

    if not (f / "short.mp4").exists():
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(f / "clip.mp4"), "-t", "1", "-c", "copy",
                        str(f / "short.mp4")], check=True)
    return ["decode", str(f / "tokens.json"), "-o", str(f / "out.mp4"), "--video", str(f / "short.mp4")]


CASES = [
    # 1. validated artifacts: types, ranges, order, sizes — the first problem, naming the field
    rhythm_case("beats-reversed", reversed_beats, "data.beats[1]: not increasing"),
    rhythm_case("beats-flat", flat_beats, "data.beats[1]: not increasing"),
    rhythm_case("beats-string", setp("beats", "0.5,1.0"), "data.beats: expected array, found string"),
    rhythm_case("beat-string", setp("beats[2]", "1.0"), "data.beats[2]: expected number, found string"),
    rhythm_case("beat-negative", setp("beats[0]", -0.25), "data.beats[0]: -0.25 is below the minimum 0"),
    raw_rhythm("beat-nan", '"beats":[0.25,', '"beats":[NaN,', "data.beats[0]: expected number, found NaN"),
    raw_rhythm("duration-inf", '"duration":6.0', '"duration":Infinity', "data.duration: expected number, found Infinity"),
    rhythm_case("duration-huge", setp("duration", 1e308), "data.duration: 1e+308 is above the maximum 10800"),
    rhythm_case("frame-rate-missing", delete("frame_rate"), "data.frame_rate: missing"),
    rhythm_case("frame-rate-zero", setp("frame_rate", 0), "data.frame_rate: 0 must be greater than 0"),
    rhythm_case("meter-zero", setp("meter", 0), "data.meter: 0 is below the minimum 1"),
    rhythm_case("meter-huge", setp("meter", 10**9), "data.meter: 1000000000 is above the maximum 16"),
    rhythm_case("meter-float", setp("meter", 4.5), "data.meter: expected an integer, found 4.5"),
    rhythm_case("envelope-999", setp("envelope[3]", 999), "data.envelope[3]: 999 is above the maximum 1"),
    rhythm_case("downbeat-off-grid", setp("downbeats[1]", 1.234), "data.downbeats[1]: 1.234 is not one of the beats"),
    rhythm_case("kind-unknown", setp("kind", "picture"), 'data.kind: expected one of "video", "audio"'),
    tokens_case("ids-float", setp("ids[3]", 3.5), "data.ids[3]: expected an integer, found 3.5"),
    tokens_case("ids-negative", setp("ids[0]", -1), "data.ids[0]: -1 is below the minimum 0"),
    tokens_case("ids-outside-vocab", setp("ids[5]", 100000), "data.ids[5]: id 100000 is outside the tokenizer's"),
    tokens_case("settings-a-path", setp("arrange.settings", "/etc/passwd"),
                "data.arrange.settings: expected object, found string"),
    tokens_case("density-999", setp("controls.bars[0].density", 999), "data.controls.bars[0].density: 999 is above"),
    tokens_case("density-outside-classes", setp("controls.bars[1].density", 200),
                "data.controls.bars[1].density: class 200 is outside the tokenizer's"),
    tokens_case("velocity-zero", setp("controls.bars[0].velocity", 0), "data.controls.bars[0].velocity: 0 is below"),
    controls_case("tempo-class-99", setp("tempo_class", 99), "data.tempo_class: class 99 is outside the tokenizer's"),
    controls_case("strength-5", setp("bars[1].strength[0]", 5), "data.bars[1].strength[0]: 5 is above the maximum 2"),
    controls_case("bars-downbeats-mismatch", lambda o: o["data"].update(downbeats=o["data"]["downbeats"][:2]),
                  "data.downbeats: 2 downbeats for"),
    corpus_case("shard-outside", lambda i: i["data"]["splits"]["train"].update(shards=["../../elsewhere.safetensors"]),
                "data.splits.train.shards[0]"),
    corpus_case("vocab-size-string", lambda i: i["data"].update(vocab_size="48"),
                "data.vocab_size: expected integer, found string"),
    model_case("model-petabytes", {"n_layers": 10**9, "d_model": 1 << 20}, "d_model 1048576 is outside"),
    model_case("model-shapes", {"d_model": 64}, "weights do not match the model config (embed.weight"),
    # 2. bounded work
    ("bars-100000", lambda f: ["generate", str(f / "controls.json"), "--bars", "100000", "-o", str(f / "out.json")],
     "--bars 100000: more than the limit of 4096 bars"),
    rhythm_case("grid-unbounded", long_grid, "data.beats: the beat grid continued to the duration has"),
    tokens_case("ids-past-limit", many_ids, "data.ids: 1048577 items, more than the limit of 1048576"),
    # 3. inputs never clobbered, with --force too
    ("rhythm-over-video", lambda f: ["extract-rhythm", str(f / "clip.mp4"), "-o", str(f / "clip.mp4"), "--force"],
     "clip.mp4: is an input of this command"),
    ("rhythm-over-video-link", symlink_to("clip.mp4", "clip-link.json", lambda f: [
        "extract-rhythm", str(f / "clip.mp4"), "-o", str(f / "clip-link.json"), "--force"]), "is an input of this command"),
    ("controls-over-rhythm", lambda f: ["encode-tokens", str(f / "rhythm.json"), "-o", str(f / "rhythm.json"), "--force"],
     "rhythm.json: is an input of this command"),
    ("tokens-over-midi-hardlink", hardlink_to("song.mid", "song-hard.json", lambda f: [
        "encode-tokens", str(f / "song.mid"), "-o", str(f / "song-hard.json"), "--force"]), "is an input of this command"),
    ("generate-over-controls", lambda f: ["generate", str(f / "controls.json"), "-o", str(f / "controls.json"),
                                          "--force"], "controls.json: is an input of this command"),
    ("decode-over-video", lambda f: ["decode", str(f / "tokens.json"), "-o", str(f / "clip.mp4"), "--video",
                                     str(f / "clip.mp4"), "--force"], "clip.mp4: is an input of this command"),
    ("evaluate-over-music", lambda f: ["evaluate", str(f / "rhythm.json"), str(f / "song.mid"), "-o",
                                       str(f / "song.mid"), "--force"], "song.mid: is an input of this command"),
    ("quantize-over-model", lambda f: ["quantize", str(f / "tiny.safetensors"), "-o", str(f / "tiny.safetensors"),
                                       "--force"], "tiny.safetensors: is an input of this command"),
    ("train-over-index", lambda f: ["train", str(f / "corpus"), "-o", str(f / "corpus" / "index.json"), "--force"],
     "index.json: is an input of this command"),
    ("run-twins", twins, "would both write"),
    ("run-out-inside-in", nested, "no video files found"),
    # 6. honest media
    ("soundfont-text", lambda f: ["decode", str(f / "tokens.json"), "-o", str(f / "out.wav"), "--soundfont",
                                  str(f / "notes.txt")], "not a SoundFont"),
    pytest.param("video-truncated", truncated_video, "is unreadable past", marks=needs_fluidsynth),
    pytest.param("video-shorter", short_video, "shorter than the", marks=needs_fluidsynth),
    # and the readers' own lines
    ("report-as-input", lambda f: ["evaluate", str(f / "report.json"), str(f / "song.mid")],
     "a v2m.report is evaluate's output"),
    ("text-as-rhythm", lambda f: ["encode-tokens", str(f / "notes.txt"), "-o", str(f / "out.json")],
     "expected a MIDI file or a v2m.rhythm artifact"),
]


def _id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@needs_ffmpeg
@pytest.mark.parametrize("name,setup,expected", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(folder, capsys, name, setup, expected):
    argv = [a.replace(str(folder / "out."), str(folder / f"out-{name}.")) for a in setup(folder)]
    before = snapshot(folder)
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("v2m: error: ")]
    assert code in (1, 2), captured.err
    assert len(errors) == 1 and "\n" not in errors[0], captured.err
    assert expected in errors[0], errors[0]
    assert "internal error" not in captured.err and "Traceback" not in captured.err
    assert captured.out == ""
    assert snapshot(folder) == before  # nothing written, every input byte-identical


def test_the_table_is_long_enough():
    assert len(CASES) >= 40


# ---------------------------------------------------------------- paths ffmpeg must read as files

@needs_ffmpeg
@pytest.mark.parametrize("name", ["-clip.mp4", "a:b.mp4", "file:x.mp4", "http:x.mp4"])
def test_odd_video_names_are_read_as_files(tmp_path, capsys, monkeypatch, name):
    clip, _ = video(tmp_path, "clip.mp4", duration=4.0, width=160, height=96)
    shutil.copy(clip, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    code = main(["extract-rhythm", "--method", "diff", "-o", "r.json", "--", name])
    assert code == 0, capsys.readouterr().err
    made = artifacts.read_artifact(tmp_path / "r.json", "v2m.rhythm")
    assert made["source"]["name"] == name and made["data"]["duration"] == pytest.approx(4.0, abs=0.1)


@needs_ffmpeg
def test_a_concat_folder_name_reads_the_file_inside_not_the_one_it_names(tmp_path, capsys, monkeypatch):
    """`concat:/abs/x.mp4` relative to the folder is a file inside it; handed to ffmpeg raw it named /abs/x.mp4."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    video(outside, "x.mp4", duration=6.0, width=160, height=96, bpm=90.0)
    batch = tmp_path / "batch"
    inner = batch / "concat:" / str(outside).lstrip("/")
    inner.mkdir(parents=True)
    video(inner, "x.mp4", duration=3.0, width=160, height=96, bpm=120.0)
    (inner / "x.mp4.truth.json").unlink()
    monkeypatch.chdir(batch)
    relative = "concat:" + str(outside / "x.mp4")
    assert Path(relative).is_file()  # the file inside the folder
    code = main(["extract-rhythm", "--method", "diff", "-o", "r.json", relative])
    assert code == 0, capsys.readouterr().err
    assert artifacts.read_artifact("r.json", "v2m.rhythm")["data"]["duration"] == pytest.approx(3.0, abs=0.1)
    code = main(["extract-rhythm", "--method", "diff", ".", "-o", "rhythms/"])
    assert code == 0, capsys.readouterr().err
    made = [p for p in Path("rhythms").rglob("*.rhythm.json")]
    assert len(made) == 1
    assert artifacts.read_artifact(made[0], "v2m.rhythm")["data"]["duration"] == pytest.approx(3.0, abs=0.1)
