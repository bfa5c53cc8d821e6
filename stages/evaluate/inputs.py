"""What evaluate is given: files recognised by content, folders grouped by name.

The file edge of stages/evaluate/report.py, shared by the CLI and folder mode: `load_input` sniffs one path (or stdin)
and turns it into an `Input` (a rhythm `Reference`, controls, `Music`, or a model/corpus/report/folder to refuse
with a hint); `evaluate_inputs` scores one piece from such inputs; `evaluate_folder` groups `v2m run`'s output
by NAME, scores each group and summarises the rows. The scoring itself is evaluate.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2m.artifacts import STDIO, describe, parse_artifact, read_bytes, sniff, sniff_path, source_of
from v2m.errors import V2MError
from v2m.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES
from v2m.stages.evaluate.report import (
    Music,
    clean,
    evaluate_pair,
    music_from_audio_file,
    music_from_score,
    music_metrics,
    reference_from_controls,
    reference_from_rhythm,
    summarize,
    with_heard_beats,
)
from v2m.stages.tokens.checks import check_tokens
from v2m.stages.tokens.convert import decode_ids
from v2m.stages.tokens.vocab import check_hash, load_tokenizer


@dataclass(frozen=True)
class Input:
    """One input after sniffing. `kind`: rhythm, controls, music, model, corpus, folder, report."""

    kind: str
    path: str
    value: object = None
    source: dict | None = None


def load_input(path: str | Path, tokenizer=None) -> Input:
    """Read one input, classified by content (never by extension, except to tell audio from video).

    "-" reads stdin, so `v2m extract-rhythm clip.mp4 | v2m evaluate - clip.mid` works (artifacts or MIDI).
    """
    p, name = Path(path), str(path)
    if name == STDIO:
        data = read_bytes(STDIO)
        kind = sniff(data[:64])
        if kind not in ("json", "midi"):
            raise V2MError(f"stdin: expected a v2m artifact or MIDI, found {describe(kind)}",
                           "pipe extract-rhythm / encode-tokens / generate output, or pass audio as a file")
        return _from_bytes(kind, data, "stdin", source_of(STDIO, data=data), tokenizer)
    kind = sniff_path(p)
    if kind == "missing":
        raise V2MError(f"{name}: no such file")
    if kind == "directory":
        return Input("corpus" if (p / "index.json").is_file() else "folder", name)
    if kind == "empty":
        raise V2MError(f"{name}: the file is empty", "pass music (MIDI, WAV or tokens) and a rhythm artifact")
    if kind == "safetensors":
        return Input("model", name)
    source = source_of(name, path=p)
    if kind in ("json", "midi"):
        return _from_bytes(kind, p.read_bytes(), name, source, tokenizer)
    if kind == "riff" or p.suffix.lower() in AUDIO_SUFFIXES:
        return Input("music", name, music_from_audio_file(p, name), source)
    if p.suffix.lower() in VIDEO_SUFFIXES:
        raise V2MError(f"{name}: a video, not a rhythm or music file",
                       f"extract its rhythm first: v2m extract-rhythm {name}; or, to score its soundtrack as the music, "
                       f"pass the audio: ffmpeg -i {name} -vn {p.with_suffix('.m4a').name}")
    raise V2MError(f"{name}: expected music (MIDI, WAV, v2m.tokens) or a v2m.rhythm artifact, found {describe(kind)}")


def _from_bytes(kind: str, data: bytes, name: str, source: dict, tokenizer) -> Input:
    """An artifact (JSON) or a MIDI file held in memory → Input."""
    if kind == "midi":
        return Input("music", name, music_from_score(read_midi(data, name), "midi", name=name), source)
    obj = parse_artifact(data, name, ("v2m.rhythm", "v2m.controls", "v2m.tokens", "v2m.report", "v2m.corpus"))
    fmt, payload = obj["format"], obj["data"]
    if fmt == "v2m.rhythm":
        return Input("rhythm", name, reference_from_rhythm(payload), source)
    if fmt == "v2m.controls":
        return Input("controls", name, payload, source)
    if fmt == "v2m.tokens":
        return Input("music", name, music_from_tokens(payload, tokenizer, name), source)
    return Input("report" if fmt == "v2m.report" else "corpus", name, None, source)


def read_midi(data: bytes, name: str):
    from symusic import Score

    try:
        return Score.from_midi(data)
    except Exception as e:  # symusic raises plain RuntimeErrors for malformed files
        raise V2MError(f"{name}: not a readable MIDI file ({str(e).splitlines()[0] if str(e) else type(e).__name__})")


def music_from_tokens(data: dict, tokenizer=None, name: str = "tokens") -> Music:
    """A v2m.tokens payload → Music, decoded on its own beat grid with the tokenizer it was made with."""
    vocab = load_tokenizer(tokenizer)
    check_hash(data.get("tokenizer_hash"), vocab, name)
    check_tokens(data, vocab, name)
    ids = data.get("ids") or []
    score = decode_ids(ids, vocab, beat_times=data.get("beat_times"), downbeats=data.get("downbeats"))
    return music_from_score(score, "tokens", requested_controls=data.get("controls"), name=name)


def evaluate_inputs(inputs: list[Input], tokenizer=None) -> tuple[str, dict, dict]:
    """Evaluate sniffed single-piece inputs → (mode, metrics, labels). Mismatched kinds are one clear line."""
    by_kind: dict[str, list[Input]] = {}
    for item in inputs:
        by_kind.setdefault(item.kind, []).append(item)
    names = lambda kind: ", ".join(i.path for i in by_kind[kind])  # noqa: E731
    if "model" in by_kind:
        raise V2MError(f"{names('model')}: a model checkpoint", "evaluate a model with --model M.safetensors --corpus DIR")
    if "corpus" in by_kind:
        raise V2MError(f"{names('corpus')}: a token corpus", "evaluate a model on it with --model M.safetensors --corpus DIR")
    if "report" in by_kind:
        raise V2MError(f"{names('report')}: a v2m.report is evaluate's output, not its input",
                       "pass the rhythm and the music it was made from")
    if "folder" in by_kind:
        raise V2MError(f"{names('folder')}: a folder", "evaluate a folder on its own: v2m evaluate FOLDER/")
    for kind, what in (("music", "pieces of music"), ("rhythm", "rhythm artifacts"), ("controls", "controls artifacts")):
        if len(by_kind.get(kind, [])) > 1:
            raise V2MError(f"{len(by_kind[kind])} {what} given ({names(kind)}); evaluate scores one piece against one video",
                           "put many outputs in a folder and evaluate the folder")
    music = by_kind.get("music", [None])[0]
    rhythm = by_kind.get("rhythm", [None])[0]
    controls = by_kind.get("controls", [None])[0]
    if music is None:
        given = ", ".join(i.path for i in inputs) or "nothing"
        raise V2MError(f"no music to evaluate (given: {given})", "add the music: a MIDI, WAV or v2m.tokens file")
    if rhythm is None and controls is None:
        metrics, labels = music_metrics(music.value)
        return "music", metrics, labels
    reference = rhythm.value if rhythm is not None else reference_from_controls(controls.value)
    metrics, labels = evaluate_pair(reference, music.value, controls.value if controls is not None else None, tokenizer)
    return "rhythm", metrics, labels


def group_folder(folder: Path) -> dict[str, list[Path]]:
    """Files of a folder grouped by name up to the first dot (`clip.rhythm.json`, `clip.mid` → `clip`).

    Videos, reports and completion markers (NAME.done.json) are left out: they are `run`'s products and
    bookkeeping, not evaluate's inputs.
    """
    groups: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() in VIDEO_SUFFIXES:
            continue
        if path.name.endswith((".report.json", ".done.json")):
            continue
        key = str(path.parent.relative_to(folder) / path.name.split(".")[0])
        groups.setdefault(key, []).append(path)
    return groups


def _music_rank(path: Path) -> int:
    """MIDI first (exact onsets), then tokens, then audio: the most exact view of the same music wins."""
    suffix = path.suffix.lower()
    return 0 if suffix in (".mid", ".midi") else 2 if suffix in AUDIO_SUFFIXES else 1


def _best_music(musics: list[Input]) -> list[Input]:
    """The most exact view of one piece (first of `musics`, sorted by `_music_rank`); when it is symbolic and the
    folder also holds its render (`run` writes NAME.mid and NAME.wav), its beats are the ones heard in the render."""
    if not musics:
        return []
    best = musics[0]
    heard = next((m for m in musics[1:] if m.value.kind == "audio"), None)
    if best.value.kind != "audio" and heard is not None:
        best = Input(best.kind, best.path, with_heard_beats(best.value, heard.value), best.source)
    return [best]


def evaluate_folder(folder: str | Path, tokenizer=None, progress=None) -> dict:
    """One row per name in `folder`, a summary and the failures; one bad file never stops the others."""
    groups = group_folder(Path(folder))
    if not groups:
        raise V2MError(f"{folder}: no rhythm, music or tokens files in this folder",
                       "point evaluate at v2m run's output folder, or a folder of MIDI/WAV files")
    rows, failures = [], []
    for name, paths in groups.items():
        try:
            paths = sorted(paths, key=_music_rank)
            inputs = [load_input(p, tokenizer) for p in paths]
            musics = [i for i in inputs if i.kind == "music"]
            inputs = [i for i in inputs if i.kind != "music"] + _best_music(musics)
            mode, metrics, labels = evaluate_inputs(inputs, tokenizer)
            rows.append({"name": name, "mode": mode, "files": [p.name for p in paths], "metrics": clean(metrics),
                         "labels": labels})
        except V2MError as e:
            failures.append({"name": name, "error": e.one_line()})
        if progress is not None:
            progress()
    summary = summarize(rows)
    metrics = dict(summary["mean"])
    metrics.update({"files": float(len(rows)), "failed": float(len(failures))})
    return {"rows": rows, "summary": summary, "failures": failures, "metrics": metrics}
