"""The evaluate plot: does the music hit the video's beats and cuts? One PNG, two rows, one time axis.

Top: the video's motion onset envelope, its beats (thin lines, downbeats thicker) and scene
cuts (red). Bottom: the music's onsets as stems, the video's beats repeated faintly behind
them, and a ±70 ms band around each beat (the beat F-measure window) so hits and misses read
at a glance. Rendered with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from v2m.artifacts import atomic_path
from v2m.stages.evaluate.beat_metrics import F_WINDOW
from v2m.stages.evaluate.report import Music, Reference


def plot_rhythm(path: str | Path, reference: Reference, music: Music, metrics: dict | None = None,
                title: str = "") -> None:
    """Write the plot to `path` (PNG) atomically. Times in seconds; the axis spans the video."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = max(reference.duration, 1e-3)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, min(24.0, duration * 0.6)), 4.8), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    if reference.envelope.size and reference.frame_rate > 0:
        t = np.arange(reference.envelope.size) / reference.frame_rate
        top.fill_between(t, reference.envelope, color="#4c72b0", alpha=0.35, linewidth=0)
        top.plot(t, reference.envelope, color="#4c72b0", linewidth=0.8, label="motion envelope")
    downbeats = set(np.round(reference.downbeats, 3).tolist())
    for beat in reference.beats:
        strong = round(float(beat), 3) in downbeats
        top.axvline(beat, color="black", linewidth=1.2 if strong else 0.5, alpha=0.8 if strong else 0.45)
    for cut in reference.cuts:
        top.axvline(cut, color="#c44e52", linewidth=2.0)
    top.set_ylabel("video")
    top.set_ylim(0, 1.05)
    handles = [*top.get_legend_handles_labels()[0], plt.Line2D([], [], color="black", linewidth=0.8, label="beats"),
               plt.Line2D([], [], color="#c44e52", linewidth=2.0, label="cuts")]
    top.legend(handles=handles, loc="upper right", fontsize=7)

    for beat in reference.beats:
        bottom.axvspan(beat - F_WINDOW, beat + F_WINDOW, color="#dddddd", linewidth=0)
    onsets = music.onsets[music.onsets <= duration]
    if onsets.size:
        bottom.vlines(onsets, 0, 1, color="#55a868", linewidth=1.0)
        bottom.plot(onsets, np.ones_like(onsets), "o", color="#55a868", markersize=3)
    bottom.set_ylabel(f"music ({music.kind})\nonsets")
    bottom.set_yticks([])
    bottom.set_ylim(0, 1.2)
    bottom.set_xlim(0, duration)
    bottom.set_xlabel("time (s)")
    if metrics:
        shown = [f"{name} {metrics[name]:.2f}" for name in ("beat_f1", "onset_f1", "bhs", "bcs", "beat_align", "cut_hit")
                 if metrics.get(name) is not None]
        title = " · ".join(filter(None, [title, "  ".join(shown)]))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
