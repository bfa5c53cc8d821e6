"""The edited-footage generator (v2m.montage): scenes at their own tempi, cuts, impacts, stills, with truth."""

import json

import numpy as np
import pytest

from tests.media import needs_ffmpeg
from v2m.cli.main import main as v2m_main
from v2m.errors import V2MError
from v2m.media import ffprobe
from v2m.montage import Scene, montage_truth, parse_scenes


def test_parse_scenes_reads_tempi_edits_and_stills():
    scenes = parse_scenes("84:8, edit:5,still,132")
    assert [(s.kind, s.bpm, s.seconds) for s in scenes] == [("pulse", 84.0, 8.0), ("edit", None, 5.0),
                                                           ("still", None, 6.0), ("pulse", 132.0, 6.0)]
    for bad in ("fast:8", "84:x", "", "500:4", "84:0.1"):
        with pytest.raises(V2MError, match="--scenes"):
            parse_scenes(bad)


def test_truth_spans_cuts_beats_and_hits():
    scenes = [Scene(6.0, "pulse", bpm=90.0), Scene(5.0, "edit", hits=3), Scene(4.0, "still"),
              Scene(5.0, "pulse", bpm=150.0, cut=False)]
    truth = montage_truth(scenes, fps=30.0, seed=3)
    spans = [(s["start"], s["end"]) for s in truth["scenes"]]
    assert spans == [(0.0, 6.0), (6.0, 11.0), (11.0, 15.0), (15.0, 20.0)] and truth["duration"] == 20.0
    assert truth["cuts"] == [6.0, 11.0]  # the last scene goes on in the same shot: a tempo change, no cut
    first, edit, still, last = truth["scenes"]
    assert np.allclose(np.diff(first["beats"]), 60 / 90, atol=1e-3) and np.allclose(np.diff(last["beats"]), 0.4, atol=1e-3)
    assert all(first["start"] <= b < first["end"] for b in first["beats"])
    assert first["downbeats"] == first["beats"][::4]
    assert len(edit["hits"]) == 3 and all(6.3 <= h <= 10.7 for h in edit["hits"]) and np.min(np.diff(edit["hits"])) >= 0.6
    assert edit["beats"] == [] and still["beats"] == [] and still["hits"] == []
    assert truth["beats"] == first["beats"] + last["beats"]


@needs_ffmpeg
def test_sample_scenes_writes_the_clip_and_its_truth(tmp_path):
    out = tmp_path / "m.mp4"
    assert v2m_main(["-q", "sample", str(out), "--scenes", "100:3,edit:2.6,still:2", "--width", "96", "--height", "64",
                     "--fps", "15"]) == 0
    truth = json.loads((tmp_path / "m.mp4.truth.json").read_text())
    assert [s["kind"] for s in truth["scenes"]] == ["pulse", "edit", "still"] and truth["cuts"] == [3.0, 5.6]
    info = ffprobe(out)
    assert abs(float(info["format"]["duration"]) - 7.6) < 0.1
    assert v2m_main(["-q", "sample", str(out), "--scenes", "100:3"]) != 0  # exists: --force to overwrite
    assert v2m_main(["-q", "sample", str(tmp_path / "m.wav"), "--scenes", "100:3"]) != 0  # scenes make a video
