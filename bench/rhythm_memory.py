"""Peak memory of extract-rhythm on a 10-second and a 5-minute video of the same kind.

Both videos are v2m.samples clips with the same settings (640x360, 30 fps, mixed motion, noise 6)
but for their length. Each extraction runs in a fresh process; we report its peak RSS and, apart,
the peak RSS of the ffmpeg decoder it streams from. Target: 5-minute / 10-second ratio <= 1.2.

    .venv/bin/python bench/rhythm_memory.py
    .venv/bin/python bench/rhythm_memory.py --long 600 --method diff
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from v2m.samples import SampleSpec, write_video

# runs the real CLI in a child, then reports its own peak RSS and its children's (ffmpeg) in KiB
PROBE = """
import json, resource, sys
from v2m.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "ffmpeg_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}), file=sys.stderr)
"""


def peak(clip: Path, method: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, "-q", "extract-rhythm", str(clip), "--method", method],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stderr.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=float, default=10.0, help="seconds")
    parser.add_argument("--long", type=float, default=300.0, help="seconds")
    parser.add_argument("--method", default="flow")
    parser.add_argument("--folder", default=tempfile.gettempdir(), help="where the clips are made (and kept)")
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    rows = {}
    for seconds in (args.short, args.long):
        clip = Path(args.folder) / f"v2m-memory-{seconds:g}s.mp4"
        if not clip.exists():
            print(f"making {clip} ...", file=sys.stderr)
            write_video(clip, SampleSpec(duration=seconds, noise=6.0, seed=11))
        rows[seconds] = peak(clip, args.method)
        assert rows[seconds]["code"] == 0
    print(f"\n{'video':>10} {'v2m peak RSS MiB':>17} {'ffmpeg peak RSS MiB':>20}")
    for seconds, row in rows.items():
        print(f"{seconds:>9g}s {row['self_kib'] / 1024:17.1f} {row['ffmpeg_kib'] / 1024:20.1f}")
    short, long = rows[args.short], rows[args.long]
    print(f"ratio {args.long:g}s / {args.short:g}s: v2m {long['self_kib'] / short['self_kib']:.3f}, "
          f"ffmpeg {long['ffmpeg_kib'] / short['ffmpeg_kib']:.3f} (method {args.method})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
