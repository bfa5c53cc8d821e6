"""Peak memory of `v2m run` on videos of 10 s, 1 min and 10 min (issue 22: flat memory at any length), and of
evaluate's audio analysis alone, read whole (the way before issue 22) and block by block, side by side.

    .venv/bin/python bench/run_memory.py                     # 10 s, 60 s, 600 s; 1 repeat
    .venv/bin/python bench/run_memory.py --seconds 10 60 --repeats 3

Each measurement is a fresh process; its peak resident set (ru_maxrss from wait4, what /usr/bin/time reports) is
the figure. Clips are made by `v2m sample` (320×180, 100 BPM) into bench/.work/memory/ (ignored) and kept. Prints a table
and the machine; the median of the repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".work" / "memory"
V2M = [sys.executable, "-m", "v2m.cli.main"]

ANALYSIS = r"""
import hashlib
import sys
from pathlib import Path
import numpy as np
from v2m.stages.evaluate import report as ev
from v2m.stages.rhythm.extract import RhythmConfig, rhythm_from_audio
path = Path(sys.argv[2])
if sys.argv[1] == "whole":  # as evaluate read a render before issue 22
    samples = ev.read_audio(path)
    onsets = ev.mr.audio_onsets(samples, ev.SAMPLE_RATE)
    rhythm = rhythm_from_audio(samples, ev.SAMPLE_RATE, RhythmConfig(sync="pulse"))
    beats, bpm = rhythm["beats"], rhythm["tempo"]["bpm"]
else:
    music = ev.music_from_audio_file(path)
    onsets, beats, bpm = music.onsets, music.beats, music.bpm
arrays = [np.asarray(onsets, np.float64), np.asarray(beats, np.float64), np.float64(bpm)]
print(len(onsets), len(beats), hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()[:16])
"""


def peak_rss_of(command: list[str], env: dict) -> tuple[float, str]:
    """(peak RSS in MB, stdout) of `command`, read through wait4 (Popen would reap it first)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child becomes the command
        os.close(read)
        os.dup2(write, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execvpe(command[0], command, env)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} exited {os.waitstatus_to_exitcode(status)}")
    return usage.ru_maxrss / 1024, out


def clip(seconds: float) -> Path:
    path = DATA / f"clip{seconds:g}s.mp4"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run([*V2M, "sample", str(path), "--duration", f"{seconds:g}", "--width", "320", "--height", "180",
                        "--bpm", "100"], check=True, capture_output=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0, 600.0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    env = {**os.environ, "V2M_QUIET": "1"}
    rows = []
    for seconds in args.seconds:
        video = clip(seconds)
        runs, whole, streamed, same = [], [], [], []
        with tempfile.TemporaryDirectory(dir=DATA) as scratch:
            out = Path(scratch) / "out"
            for _ in range(args.repeats):
                runs.append(peak_rss_of([*V2M, "run", str(video), "-o", str(out), "--force"], env)[0])
            wav = out / f"{video.stem}.wav"
            for _ in range(args.repeats):
                whole_mb, whole_out = peak_rss_of([sys.executable, "-c", ANALYSIS, "whole", str(wav)], env)
                blocks_mb, blocks_out = peak_rss_of([sys.executable, "-c", ANALYSIS, "blocks", str(wav)], env)
                whole.append(whole_mb)
                streamed.append(blocks_mb)
                same.append(whole_out == blocks_out)  # onsets, beats and tempo, to the bit
        rows.append((seconds, statistics.median(runs), statistics.median(whole), statistics.median(streamed),
                     all(same)))
        print(f"  {seconds:g} s: run {rows[-1][1]:.0f} MB", file=sys.stderr, flush=True)
    base = rows[0][1]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
          f" (shared: other jobs run beside this)")
    print(f"{'video':>8} | {'run peak RSS':>12} | {'× first':>7} | {'WAV analysis whole':>18} | {'blocks':>7} | "
          "same onsets, beats, tempo")
    for seconds, run, whole_mb, blocks_mb, equal in rows:
        print(f"{seconds:>7g}s | {run:>9.0f} MB | {run / base:>7.2f} | {whole_mb:>15.0f} MB | {blocks_mb:>4.0f} MB | "
              f"{'yes' if equal else 'NO'}")
    shutil.rmtree(DATA / "out", ignore_errors=True)


if __name__ == "__main__":
    main()
