"""Piano rolls of several pieces stacked in one PNG, so a reader sees which bars return (issue 17).

Each piece is drawn over its first `--seconds` (cut at a bar line): the melody (stages/evaluate/structure.py picks
it: the "melody" track, else the highest busy track; its skyline) in colour, the other tracks in light grey, bar
lines, each melody bar shaded by what it restates (exact, transposed, varied: the report's definitions), and phrase
starts marked with a triangle — from NAME.controls.json beside a `v2m run` output (the video's cuts), else read off
the music. Items are `LABEL=PATH`: a MIDI file, a `v2m.tokens` artifact, or `music21:NAME` (a piece of music21's
corpus, read as the corpus builder reads it).

    .venv/bin/python bench/piano_rolls.py docs/img/rolls.png "real=music21:bach/bwv66.6" "clip=out/clip.mid"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLOURS = {"new": None, "exact": "#4caf50", "transposed": "#2196f3", "varied": "#ff9800"}


def load(item: str):
    """'LABEL=PATH' → (label, symusic.Score, control bars or None)."""
    from symusic import Score

    from v2m.stages.evaluate.inputs import music_from_tokens
    from v2m.stages.tokens.corpus_read import read_scores

    label, _, path = item.partition("=")
    if not path:
        label, path = Path(item).stem, item
    if path.startswith("music21:"):
        import music21.corpus

        source = Path(music21.corpus.getWork(path.removeprefix("music21:")))
        return label, read_scores(source)[0][0][1], None
    file = Path(path)
    stem = file.name.split(".")[0]
    controls_path = file.with_name(f"{stem}.controls.json")
    controls = json.loads(controls_path.read_text())["data"]["bars"] if controls_path.is_file() else None
    if file.read_bytes()[:1] == b"{":
        data = json.loads(file.read_text())["data"]
        return label, music_from_tokens(data).score, controls or (data.get("controls") or {}).get("bars")
    return label, Score(str(file)), controls


def draw(out: Path, items: list[tuple[str, object, list | None]], seconds: float, dpi: int = 72) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from v2m.artifacts import atomic_path
    from v2m.stages.evaluate.structure import (
        STEPS_PER_BEAT,
        bar_contents,
        classify_bars,
        controls_phrases,
        excerpt,
        melody_of,
        melody_track,
        music_phrases,
        structure_metrics,
    )

    fig, axes = plt.subplots(len(items), 1, figsize=(10, 2.1 * len(items)), squeeze=False)
    for ax, (label, score, controls) in zip(axes[:, 0], items):
        cut = excerpt(score, seconds)
        melody = melody_of(cut)
        grid = cut.resample(STEPS_PER_BEAT, min_dur=1)
        lead = melody_track(grid)
        for track in grid.tracks:
            if track.is_drum or track is lead or not len(track.notes):
                continue
            notes = track.notes.numpy()
            for t, d, p in zip(notes["time"], notes["duration"], notes["pitch"]):
                ax.add_patch(plt.Rectangle((t / STEPS_PER_BEAT, p - 0.4), d / STEPS_PER_BEAT, 0.8, color="#c8c8c8", lw=0))
        labels = classify_bars(bar_contents(melody))
        bars = melody.bar_starts / STEPS_PER_BEAT
        low, high = melody.pitch.min() - 14, melody.pitch.max() + 3
        for i, kind in enumerate(labels):
            if COLOURS.get(kind):
                ax.axvspan(bars[i], bars[i + 1], color=COLOURS[kind], alpha=0.18, lw=0)
        for x in bars:
            ax.axvline(x, color="#888888", lw=0.6)
        for t, d, p in zip(melody.time, melody.duration, melody.pitch):
            ax.add_patch(plt.Rectangle((t / STEPS_PER_BEAT, p - 0.45), d / STEPS_PER_BEAT, 0.9, color="#222266", lw=0))
        phrase = controls_phrases(melody, controls) if controls else music_phrases(melody)
        for i, start in enumerate(phrase):
            if start:
                ax.plot(bars[i], high - 0.5, marker="v", color="#d32f2f", markersize=7, clip_on=False)
        metrics, _ = structure_metrics(cut, controls)
        ax.set_xlim(bars[0], bars[-1])
        ax.set_ylim(low, high)  # the melody's register and an octave below it (the accompaniment's top)
        ax.set_ylabel("pitch")
        ax.set_title(f"{label}: repeated-or-varied {metrics['bar_repeated_or_varied']:.2f} (exact "
                     f"{metrics['bar_repeat_exact']:.2f}, transposed {metrics['bar_repeat_transposed']:.2f}, varied "
                     f"{metrics['bar_varied']:.2f}), motif recurrence {metrics['motif_recurrence']:.2f}, "
                     f"{metrics['melody_notes_per_beat']:.2f} notes/beat", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("quarter notes (bar lines grey; shaded bars restate an earlier one: green exact, blue "
                           "transposed, orange varied; ▼ phrase start)", fontsize=8)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("items", nargs="+", help="LABEL=PATH (MIDI, v2m.tokens, or music21:NAME)")
    parser.add_argument("--seconds", type=float, default=20.0, help="draw the first SECONDS of each piece")
    parser.add_argument("--dpi", type=int, default=72)
    args = parser.parse_args()
    draw(args.out, [load(item) for item in args.items], args.seconds, args.dpi)
    print(f"written: {args.out} ({args.out.stat().st_size / 1000:.0f} kB)")


if __name__ == "__main__":
    main()
