"""The corpus builder: reading formats, skipping and counting bad files, de-dup, splits, shards, resume."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.music import empty_midi, malformed_midi, midi_bytes, minor_song, song
from tests.stages.tokens.test_vocab import small_vocab

ABC_TWO_TUNES = """%abc
X:1
T:One
M:4/4
L:1/8
K:C
CDEF GABc|cBAG FEDC|CDEF GABc|c8|]

X:2
T:Two
M:3/4
L:1/4
K:Am
A B c|d e f|e d c|A3|]
"""

KERN = """**kern\t**kern
*M4/4\t*M4/4
=1\t=1
2C\t4c
.\t4d
2G\t[2e
=2\t=2
1C\t2e]
.\t2g
*-\t*-
"""


def make_folder(root: Path) -> Path:
    folder = root / "scores"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.mid").write_bytes(midi_bytes(song()[0]))
    (folder / "sub" / "a_copy.mid").write_bytes(midi_bytes(song()[0]))  # same notes: de-duplicated
    (folder / "b.mid").write_bytes(midi_bytes(minor_song()[0]))
    (folder / "c.mid").write_bytes(midi_bytes(song(notes_per_beat=(4, 4, 2, 1), qpm=90)[0]))
    (folder / "empty.mid").write_bytes(empty_midi())
    (folder / "broken.mid").write_bytes(malformed_midi())
    (folder / "notes.mid").write_bytes(b"this is not a MIDI file")
    (folder / "tunes.abc").write_text(ABC_TWO_TUNES)
    (folder / "duet.krn").write_text(KERN)
    return folder


def test_kern_reader_reads_ties_chords_and_meter():
    from v2m.stages.tokens.humdrum import read_kern

    score = read_kern(KERN)
    notes = sorted((n.time, n.duration, n.pitch) for t in score.tracks for n in t.notes)
    assert notes == sorted([(0, 960, 48), (960, 960, 55), (1920, 1920, 48),  # lower spine
                            (0, 480, 60), (480, 480, 62), (960, 1920, 64), (2880, 960, 67)])  # upper, e tied over the bar
    assert [(ts.numerator, ts.denominator) for ts in score.time_signatures] == [(4, 4)]


def test_kern_reader_agrees_with_music21_on_a_palestrina_movement():
    pytest.importorskip("music21")
    from v2m.stages.tokens.corpus import music21_sources
    from v2m.stages.tokens.corpus_read import _read_music21
    from v2m.stages.tokens.humdrum import read_kern

    root, sources = music21_sources()
    path = next(p for sid, p in sources if sid.startswith("palestrina/Agnus_0"))

    def notes(score):
        score = score.resample(480)
        return sorted((n.time, n.duration, n.pitch) for t in score.tracks for n in t.notes)

    assert notes(read_kern(path.read_text())) == notes(_read_music21(path)[0][1])


def test_build_counts_skips_dedups_splits_and_resumes(tmp_path):
    from v2m.stages.tokens.corpus import CorpusConfig, build_corpus, folder_sources, read_corpus, split_of

    vocab = small_vocab()
    folder = make_folder(tmp_path)
    sources = folder_sources(folder)
    assert len(sources) == 9
    out = tmp_path / "corpus"
    config = CorpusConfig(val_share=0.3, test_share=0.3)
    index = build_corpus(sources, out, vocab=vocab, config=config, jobs=1, keep_work=True)
    data = index["data"]
    stats = data["stats"]
    assert index["format"] == "v2m.corpus" and data["tokenizer_hash"] == vocab.hash
    assert data["vocab_size"] == len(vocab) and data["special"] == {"pad": 0, "bos": 1, "eos": 2}
    assert stats["files"] == 9 and stats["files_read"] == 7
    print(stats["files_skipped"])
    assert stats["files_skipped"] == {"not MIDI (no MThd header)": 1, "unreadable (RuntimeError)": 1}
    assert stats["pieces_skipped"] == {"no notes": 1, "fewer than 8 notes": 1}  # empty.mid; the 7-note kern duet
    assert stats["duplicates"] == 1
    assert stats["pieces_kept"] == 5  # a, b, c, two ABC tunes
    total = 0
    for split, info in data["splits"].items():
        sequences = list(read_corpus(out / "index.json", split))
        assert len(sequences) == info["sequences"] and sum(len(s) for s in sequences) == info["tokens"]
        for seq in sequences:
            assert seq.dtype == np.uint16 and seq[0] == vocab.bos and seq[-1] == vocab.eos
            assert vocab.is_control(int(seq[1])) and vocab.is_control(int(seq[2]))
        total += info["pieces"]
    assert total == 5
    assert split_of("tunes.abc#1", config) == split_of("tunes.abc#1", config)
    # resume: the per-file analyses are reused, and the rebuilt shards are byte-identical
    first = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
    work = sorted((out / ".work").glob("*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in work]
    (out / "index.json").unlink()
    build_corpus(sources, out, vocab=vocab, config=config, jobs=1)
    assert [p.stat().st_mtime_ns for p in work if p.exists()] in ([], stamps)
    assert {p.name: p.read_bytes() for p in out.glob("*.safetensors")} == first
    assert not (out / ".work").exists()


def test_long_pieces_are_cut_at_bars(tmp_path):
    from v2m.stages.tokens.corpus import CorpusConfig, build_corpus, folder_sources, read_corpus

    vocab = small_vocab()
    folder = tmp_path / "long"
    folder.mkdir()
    chords = ("C", "F", "G", "C") * 6
    (folder / "long.mid").write_bytes(midi_bytes(song(chords=chords, notes_per_beat=(4,) * len(chords))[0]))
    index = build_corpus(folder_sources(folder), tmp_path / "c", vocab=vocab,
                         config=CorpusConfig(max_tokens=200, val_share=0, test_share=0), jobs=1)
    sequences = list(read_corpus(tmp_path / "c" / "index.json", "train"))
    assert len(sequences) > 1 and all(len(s) <= 200 for s in sequences)
    bars = sum(int((s == vocab.bar_id).sum()) for s in sequences)
    assert bars == len(chords) and index["data"]["splits"]["train"]["pieces"] == 1


def test_parallel_build_matches_serial(tmp_path):
    from v2m.stages.tokens.corpus import build_corpus, folder_sources

    vocab = small_vocab()
    sources = folder_sources(make_folder(tmp_path))
    build_corpus(sources, tmp_path / "serial", vocab=vocab, jobs=1)
    build_corpus(sources, tmp_path / "parallel", vocab=vocab, jobs=2)
    for shard in (tmp_path / "serial").glob("*.safetensors"):
        assert (tmp_path / "parallel" / shard.name).read_bytes() == shard.read_bytes()
    a = json.loads((tmp_path / "serial" / "index.json").read_text())["data"]["splits"]
    b = json.loads((tmp_path / "parallel" / "index.json").read_text())["data"]["splits"]
    assert a == b
