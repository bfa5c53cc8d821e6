"""Reading one score file into symusic Scores, whatever its format.

The corpus builder's workers call `read_scores` on every source file: MIDI is recognised by content,
ABC is read with symusic one piece per `X:` tune, kern with tokens/humdrum.py (music21 when it gives up), and
MusicXML & co. through music21, which symusic cannot read. Files that are deliberately not read raise
`SkipFile`, whose message is the reason counted in the corpus stats.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from v2m.stages.tokens.humdrum import Unsupported, read_kern

MIDI_EXTENSIONS = {".mid", ".midi", ".kar", ".smf"}
MUSIC21_EXTENSIONS = {".krn", ".mxl", ".xml", ".musicxml", ".mei", ".md", ".capx"}
ANALYSIS_EXTENSIONS = {".rntxt"}  # roman-numeral analyses: harmony outlines of pieces already in the corpus
SCORE_EXTENSIONS = MIDI_EXTENSIONS | MUSIC21_EXTENSIONS | ANALYSIS_EXTENSIONS | {".abc"}


@contextmanager
def silenced_fds():
    """Send the C-level stdout/stderr to /dev/null: symusic's ABC parser prints warnings there, and stdout
    must carry nothing but the artifact."""
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def read_scores(path: Path, limit: int | None = None) -> tuple[list[tuple[str, object]], Counter]:
    """A source file → ([(piece name, symusic.Score)], skipped-piece reasons). Raises on unreadable files.
    `limit` reads only the first tunes of a many-tune ABC file."""
    import symusic

    skipped: Counter = Counter()
    suffix = path.suffix.lower()
    data = path.read_bytes()
    if data[:4] == b"MThd":
        return [("", symusic.Score.from_midi(data))], skipped
    if suffix == ".abc":
        text = data.decode("utf-8", errors="replace")
        parts = re.split(r"(?m)^(?=X:)", text)
        header = parts[0] if not parts[0].startswith("X:") else ""
        tunes = ([p for p in parts if p.startswith("X:")] or [text])[:limit]
        out = []
        for number, tune in enumerate(tunes):
            try:
                with silenced_fds():
                    out.append((f"#{number}", symusic.Score.from_abc(header + tune)))
            except Exception:
                skipped["unreadable tune"] += 1
        return out, skipped
    if suffix == ".krn":
        try:
            return [("", read_kern(data.decode("utf-8", errors="replace")))], skipped
        except Unsupported:
            pass  # spine splits and the like: music21 below
    if suffix in MUSIC21_EXTENSIONS:
        return _read_music21(path), skipped
    if suffix in MIDI_EXTENSIONS:
        raise SkipFile("not MIDI (no MThd header)")
    if suffix in ANALYSIS_EXTENSIONS:
        raise SkipFile("roman-numeral analysis, not a score")
    raise SkipFile(f"unsupported format {suffix}")


class SkipFile(Exception):
    """A file that is deliberately not read; the message is the reason counted in the stats."""


def _read_music21(path: Path) -> list[tuple[str, object]]:
    import music21
    import symusic
    from music21.midi import translate

    # forceSource/storePickle: never read or write music21's pickle cache
    parsed = music21.converter.parse(str(path), forceSource=True, storePickle=False)
    scores = list(parsed.scores) if isinstance(parsed, music21.stream.Opus) else [parsed]
    out = []
    for number, score in enumerate(scores):
        midi = translate.streamToMidiFile(score).writestr()
        out.append((f"#{number}" if len(scores) > 1 else "", symusic.Score.from_midi(midi)))
    return out
