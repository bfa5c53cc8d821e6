"""The one-liner from docs/ARCHITECTURE.md as a real shell pipeline (bash, `set -o pipefail`), four processes chained by pipes.

    v2m extract-rhythm clip.mp4 | v2m encode-tokens - | v2m generate - --model DEBUG | v2m decode - -o clip.mid
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.stages.generate.test_generate import constructed_vocab, debug_model  # noqa: F401  (fixture)
from tests.stages.run.test_video import small_video


def test_shell_pipeline_video_to_midi_on_the_videos_downbeats(tmp_path, debug_model):  # noqa: F811
    import symusic

    from v2m.stages.evaluate import beat_metrics as mr

    small_video(tmp_path / "clip.mp4", duration=5.0, bpm=120.0)
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(json.dumps(constructed_vocab().to_json()))  # the debug model's vocabulary
    v2m = str(Path(sys.executable).with_name("v2m"))
    script = (f"set -euo pipefail\n"
              f"'{v2m}' extract-rhythm clip.mp4 | tee rhythm.json | '{v2m}' encode-tokens - --tokenizer tokenizer.json "
              f"| '{v2m}' generate - --model '{debug_model[0]}' --seed 1 | '{v2m}' decode - -o clip.mid "
              f"--tokenizer tokenizer.json\n")
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # every artifact went down the pipe, the last into clip.mid

    score = symusic.Score(str(tmp_path / "clip.mid"))
    assert sum(len(t.notes) for t in score.tracks) > 0
    # the music's beats are the video's beats (the tempo map the tokens carried through the pipe)
    rhythm = json.loads((tmp_path / "rhythm.json").read_text())["data"]
    music_beats = mr.as_times(score.to("second").get_beats())
    video_beats = mr.as_times(rhythm["beats"])
    video_beats = video_beats[(video_beats >= rhythm["downbeats"][0]) & (video_beats <= music_beats[-1])]
    assert len(video_beats) >= 4 and mr.beat_f_measure(video_beats, music_beats).recall == 1.0

    # a failing stage fails the pipeline (pipefail) with its one-line error, and nothing is written downstream
    broken = subprocess.run(["bash", "-c", f"set -o pipefail; '{v2m}' extract-rhythm missing.mp4 "
                             f"| '{v2m}' encode-tokens - --tokenizer tokenizer.json -o x.json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0 and "missing.mp4" in broken.stderr and not (tmp_path / "x.json").exists()
