"""Multi-track scores → the diffusion backend's training set: notes by role on a beat-synchronous grid, with the
controls read off the music (the CMT recipe of tokens/controls.py: train on music with controls measured on it,
generate with controls measured on the video).

Each piece with at least two pitched parts (a chorale, a motet, a quartet, a song with its accompaniment) is put on
its own beat grid — `models.diffusion.STEPS_PER_BEAT` steps per notated beat, the beat being MidiTok's (the
time signature's denominator), so a bar of the video's meter has the same number of steps as a bar of the music —
and its parts are given roles (models/diffusion.py ROLES): the part of the highest mean pitch is the melody, the
lowest the bass, the parts between the accompaniment; a two-part piece has no accompaniment. Per bar the controls
are the tokenizer's (density class, per-beat strength, phrase start), globally the mode, the tempo class and the
melody's register.

The set is one safetensors file of flat arrays (no pickle), small enough to carry to the GPU machine:
`notes` int16 [N, 4] (step, duration in steps, MIDI pitch, role), `bar_step` int32 [B] (each bar's first step),
`bar_density`/`bar_phrase` int8 [B], `beat_strength` int8 [beats], `piece_steps` int32, `piece_globals` int8
[P, 3] (mode, register, tempo class) and the offsets of each piece into them. `models/diffusion_data.py` turns it
into training windows (rolls and conditions) with transposition augmentation.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from v2m import log
from v2m.artifacts import atomic_write_bytes
from v2m.errors import V2MError
from v2m.models.diffusion import PITCH_HIGH, PITCH_LOW, ROLES, STEPS_PER_BEAT, register_class
from v2m.stages.tokens.controls import analyse_score, bar_controls, tempo_class
from v2m.stages.tokens.corpus_read import SkipFile, read_scores
from v2m.stages.tokens.vocab import load_tokenizer

ROLL_EXTENSIONS = {".krn", ".mxl", ".xml", ".musicxml", ".mid", ".midi"}
MAX_PIECE_STEPS = 40_000
# music21 parses a large MusicXML score in minutes of CPU (a Beethoven quartet, a Schubert song in full score):
# files above this size are skipped (counted), and one file may take at most FILE_TIMEOUT_S of CPU time
MAX_SOURCE_BYTES = 150_000
FILE_TIMEOUT_S = 20


def piece_rolls(score, vocab) -> dict | None:
    """One multi-part symusic Score → its notes by role on its beat grid and its controls; None when it has fewer
    than two pitched parts with notes."""
    from miditok.utils import get_bars_ticks, get_beats_ticks

    tracks = [t for t in score.tracks if not t.is_drum and len(t.notes)]
    if len(tracks) < 2:
        return None
    analysis = analyse_score(score, vocab)  # the merged piece's controls, as the token corpus has them
    if not analysis.base_ids:
        return None
    controls = bar_controls(analysis, vocab.stats)
    beats = np.asarray(get_beats_ticks(score, only_notes_onsets=False), dtype=np.int64)
    bars = np.asarray(get_bars_ticks(score, only_notes_onsets=False), dtype=np.int64)
    end = max(int(t.notes.numpy()["time"].max() + t.notes.numpy()["duration"].max()) for t in tracks)
    if len(beats) < 2 or not len(bars):
        return None
    step = int(beats[1] - beats[0])
    if (np.diff(beats) <= 0).any():
        return None
    if beats[-1] <= end:  # the grid continued at its last beat length past the last note
        step = int(beats[-1] - beats[-2])
        beats = np.append(beats, beats[-1] + step * np.arange(1, (end - beats[-1]) // step + 2))
    grid = (beats[:-1, None] + (np.diff(beats)[:, None] * np.arange(STEPS_PER_BEAT)[None, :]) // STEPS_PER_BEAT)
    grid = np.append(grid.ravel(), beats[-1])
    steps = len(grid) - 1
    if steps > MAX_PIECE_STEPS:
        return None
    n_bars = min(len(controls), int(np.searchsorted(bars, end, side="left")))
    bar_step = [int(np.searchsorted(grid, b)) for b in bars[:n_bars]]
    means = [float(t.notes.numpy()["pitch"].mean()) for t in tracks]
    order = np.argsort(means)[::-1]  # high → low
    role_of = {int(order[0]): 0, int(order[-1]): 1}
    notes = []
    for index, track in enumerate(tracks):
        role = role_of.get(index, 2)
        arr = track.notes.numpy()
        half = np.diff(grid).min() // 2  # onsets and ends to the nearest step
        start = np.clip(np.searchsorted(grid, arr["time"] + half, side="right") - 1, 0, steps - 1)
        stop = np.clip(np.searchsorted(grid, arr["time"] + arr["duration"] + half, side="right") - 1, 0, steps)
        pitch = arr["pitch"].astype(np.int64)
        while (pitch < PITCH_LOW).any() or (pitch > PITCH_HIGH).any():  # into the roll's range by octaves
            pitch = np.where(pitch < PITCH_LOW, pitch + 12, np.where(pitch > PITCH_HIGH, pitch - 12, pitch))
        for s, e, p in zip(start, stop, pitch):
            notes.append((int(s), max(1, int(e - s)), int(p), role))
    if not notes or n_bars < 2:
        return None
    notes = np.asarray(sorted(set(notes)), dtype=np.int16)
    melody = notes[notes[:, 3] == 0, 2]
    strengths = [s for bar in controls[:n_bars] for s in bar["strength"]]
    return {"notes": notes, "bar_step": np.asarray(bar_step, np.int32),
            "bar_density": np.asarray([b["density"] for b in controls[:n_bars]], np.int8),
            "bar_phrase": np.asarray([b["phrase"] for b in controls[:n_bars]], np.int8),
            "bar_beats": np.asarray([len(b["strength"]) for b in controls[:n_bars]], np.int8),
            "beat_strength": np.asarray(strengths, np.int8), "steps": steps,
            "globals": (int(analysis.mode == "minor"), register_class(float(melody.mean()) if len(melody) else 66.0),
                        tempo_class(analysis.tempo_qpm, vocab.stats))}


@functools.cache
def _worker_vocab(tokenizer: str):
    """The tokenizer (with its control classes) from its JSON, built once per worker process (a documented cache)."""
    return load_tokenizer(json.loads(tokenizer))


def _analyse(task: tuple[str, str, str]) -> tuple[str, list[dict], str | None]:
    """Worker: one source file → (source id, its pieces' rolls, the reason it gave nothing)."""
    import signal

    source_id, path, tokenizer = task

    def _timeout(signum, frame):
        raise TimeoutError(f"took more than {FILE_TIMEOUT_S} s of CPU time")

    signal.signal(signal.SIGVTALRM, _timeout)
    signal.setitimer(signal.ITIMER_VIRTUAL, FILE_TIMEOUT_S)
    try:
        vocab = _worker_vocab(tokenizer)
        scores, _ = read_scores(Path(path))
        out = []
        for _, score in scores:
            try:
                piece = piece_rolls(score, vocab)
            except Exception:  # one unreadable movement never stops the file's others
                piece = None
            if piece is not None:
                out.append(piece)
        return source_id, out, None if out else "fewer than two parts"
    except SkipFile as e:
        return source_id, [], str(e)
    except Exception as e:
        return source_id, [], type(e).__name__
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)


def build_roll_set(sources: list[tuple[str, Path]], output: str | Path, vocab, jobs: int = 2,
                   force: bool = False) -> dict:
    """Read every source (id, path) with a score extension, keep the multi-part pieces, write the roll set
    atomically to `output`; returns its summary (pieces, notes, steps, skipped reasons)."""
    from safetensors.numpy import save

    output = Path(output)
    if output.exists() and not force:
        raise V2MError(f"{output} exists", "pass --force to overwrite it")
    tokenizer = json.dumps(vocab.to_json(), sort_keys=True)
    skipped = Counter()
    tasks = []
    for sid, p in sources:
        if p.suffix.lower() not in ROLL_EXTENSIONS:
            continue
        if p.stat().st_size > MAX_SOURCE_BYTES:
            skipped[f"larger than {MAX_SOURCE_BYTES // 1000} kB"] += 1
            continue
        tasks.append((sid, str(p), tokenizer))
    if not tasks:
        raise V2MError("no score files to read (.krn, .mxl, .xml, .mid)")
    found_by = {}
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_analyse, task) for task in tasks]
        for done, future in enumerate(as_completed(futures), 1):
            sid, found, reason = future.result()
            found_by[sid] = found
            if reason:
                skipped[reason] += 1
            if done % 100 == 0 or done == len(tasks):
                log.info(f"rolls: {done}/{len(tasks)} files, {sum(map(len, found_by.values()))} multi-part pieces")
    pieces = [piece for sid in sorted(found_by) for piece in found_by[sid]]  # in source order, however they finished
    if not pieces:
        raise V2MError("no multi-part piece found in the sources")
    offsets = lambda key: np.cumsum([0] + [len(p[key]) for p in pieces]).astype(np.int64)  # noqa: E731
    arrays = {"notes": np.concatenate([p["notes"] for p in pieces]), "note_offsets": offsets("notes"),
              "bar_step": np.concatenate([p["bar_step"] for p in pieces]), "bar_offsets": offsets("bar_step"),
              "bar_density": np.concatenate([p["bar_density"] for p in pieces]),
              "bar_phrase": np.concatenate([p["bar_phrase"] for p in pieces]),
              "bar_beats": np.concatenate([p["bar_beats"] for p in pieces]),
              "beat_strength": np.concatenate([p["beat_strength"] for p in pieces]),
              "beat_offsets": offsets("beat_strength"),
              "piece_steps": np.asarray([p["steps"] for p in pieces], np.int32),
              "piece_globals": np.asarray([p["globals"] for p in pieces], np.int8)}
    summary = {"pieces": len(pieces), "notes": int(len(arrays["notes"])), "steps": int(arrays["piece_steps"].sum()),
               "files": len(tasks), "skipped": dict(skipped), "roles": list(ROLES),
               "steps_per_beat": STEPS_PER_BEAT, "tokenizer_hash": vocab.hash}
    blob = save(arrays, metadata={"v2m": json.dumps({"format": "v2m.rolls", "summary": summary,
                                                     "tokenizer": vocab.to_json()}, sort_keys=True)})
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, blob)
    return summary


def rolls_from(source: str | None, folder: str | None, output: str, vocab, jobs: int = 2, force: bool = False) -> dict:
    """`v2m encode-tokens --rolls`: music21's corpus (`source` "music21") or a folder of scores → a roll set."""
    from v2m.stages.tokens.corpus import folder_sources, music21_sources

    if source not in (None, "music21"):
        raise V2MError(f"--source {source!r}: the only bundled collection is 'music21'")
    if source == "music21":
        _, sources = music21_sources()
    elif folder and os.path.isdir(folder):
        sources = folder_sources(Path(folder))
    else:
        raise V2MError("--rolls needs a folder of scores or --source music21")
    return build_roll_set(sources, output, vocab, jobs=jobs, force=force)
