"""The two corpora of BENCHMARKS.md's issue-23 section, from music21's bundled scores (no network):

    python bench/sweeps/make_corpora.py OUT/      # then, as the section says:
    v2m encode-tokens OUT/mymidi -o OUT/usercorpus/    # "a user's folder of MIDI files"
    v2m encode-tokens OUT/m21test -o OUT/m21corpus/    # the default corpus's held-out scores

- OUT/m21test: links to every single-score music21 file (MusicXML / kern) that the corpus builder's own split rule
  (stages/tokens/corpus.split_of) puts in the test split of the default model's corpus — pieces it never trained on.
  (The full corpus, `v2m encode-tokens --source music21`, did not finish in 40 min on the shared 2-core box.)
- OUT/mymidi: 31 of those scores written out as .mid files by music21, standing in for a user's own MIDI folder.
"""

import sys
from pathlib import Path

import music21

from v2m.stages.tokens.corpus import CorpusConfig, split_of


def main(out: Path) -> None:
    root = Path(music21.__file__).parent / "corpus"
    config = CorpusConfig()
    held = [p for p in sorted(Path(p) for p in music21.corpus.getPaths())
            if p.suffix in (".mxl", ".krn", ".xml", ".musicxml") and split_of(str(p.relative_to(root)), config) == "test"]
    links, midi = out / "m21test", out / "mymidi"
    links.mkdir(parents=True, exist_ok=True)
    midi.mkdir(parents=True, exist_ok=True)
    for p in held:
        link = links / str(p.relative_to(root)).replace("/", "__")
        if not link.exists():
            link.symlink_to(p)
    written = 0
    for p in held[::max(1, len(held) // 40)]:
        if written >= 31:
            break
        try:
            music21.converter.parse(str(p)).write("midi", fp=str(midi / (p.stem + ".mid")))
            written += 1
        except Exception as e:  # a score music21 cannot expand (bad repeats): skipped, as encode-tokens would
            print(f"skipped {p.name}: {e}", file=sys.stderr)
    print(f"{len(held)} held-out scores linked in {links}, {written} MIDI files in {midi}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/.work/issue23"))
