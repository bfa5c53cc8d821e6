"""Golden files: three pieces encoded with the shipped tokenizer (presets/tokenizer.json) must give the same ids
and decode to the same notes as when the goldens were made.

The goldens (tests/data/tokens/) are made by this file:  .venv/bin/python -m tests.stages.tokens.test_golden
Re-make them only when the tokenizer changes on purpose (its hash is stored with them).
"""

import json
from pathlib import Path

import pytest

from tests.music import midi_bytes, minor_song, song
from v2m.stages.tokens.convert import decode_ids, encode_score

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "tokens"
PIECES = ("song_major", "song_minor", "palestrina_agnus")


def source_midi(name: str) -> bytes:
    """The input MIDI of a golden piece (a Palestrina movement via the kern reader: real polyphony, 4/2 meter)."""
    if name == "song_major":
        return midi_bytes(song(notes_per_beat=(1, 2, 3, 4))[0])
    if name == "song_minor":
        return midi_bytes(minor_song(qpm=72)[0])
    from v2m.stages.tokens.corpus import music21_sources
    from v2m.stages.tokens.humdrum import read_kern

    _, sources = music21_sources()
    path = next(p for sid, p in sources if sid == "palestrina/Agnus_01.krn")
    score = read_kern(path.read_text())
    return midi_bytes(score.clip(0, 16 * 4 * 480))  # the first 16 bars of 4/2


def notes(score) -> list[list[int]]:
    return sorted([n.time, n.duration, n.pitch] for t in score.tracks for n in t.notes)


def make() -> None:
    import symusic

    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = load_tokenizer()
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name in PIECES:
        data = source_midi(name)
        ids = encode_score(symusic.Score.from_midi(data), vocab)
        decoded = decode_ids(ids, vocab)
        (GOLDEN / f"{name}.mid").write_bytes(data)
        record = {"tokenizer_hash": vocab.hash, "ids": ids, "tpq": decoded.ticks_per_quarter, "notes": notes(decoded)}
        (GOLDEN / f"{name}.json").write_text(json.dumps(record, separators=(",", ":")) + "\n")
        print(f"{name}: {len(ids)} tokens, {len(record['notes'])} notes")


@pytest.mark.parametrize("name", PIECES)
def test_golden_piece(name):
    import symusic

    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = load_tokenizer()
    record = json.loads((GOLDEN / f"{name}.json").read_text())
    if record["tokenizer_hash"] != vocab.hash:
        pytest.fail("presets/tokenizer.json changed since the goldens were made: re-make them with "
                    "`.venv/bin/python -m tests.stages.tokens.test_golden` if the change was on purpose")
    score = symusic.Score.from_midi((GOLDEN / f"{name}.mid").read_bytes())
    ids = encode_score(score, vocab)
    assert ids == record["ids"]
    decoded = decode_ids(ids, vocab)
    assert decoded.ticks_per_quarter == record["tpq"] and notes(decoded) == record["notes"]
    # every note the tokenizer's input keeps comes back (merging voices drops exact unison doublings only)
    from v2m.stages.tokens.vocab import prepare_score

    prepared = prepare_score(score, vocab)
    assert len(record["notes"]) == prepared.note_num() >= score.note_num() - 1


if __name__ == "__main__":
    make()
