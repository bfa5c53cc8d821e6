"""`v2m decode`: tokens → .mid / .wav / muxed video, and its one-line refusals (nothing half-written)."""

import json

import pytest
import symusic

from tests.music import song
from tests.stages.decode.test_render import make_video, video_packets_md5
from tests.stages.tokens.test_vocab import small_vocab
from v2m import artifacts
from v2m.cli.main import main
from v2m.stages.tokens.convert import encode_score


@pytest.fixture()
def setup(tmp_path):
    """(tokens artifact path, tokenizer path) for a 4-bar song placed on an uneven beat grid."""
    vocab = small_vocab()
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(json.dumps(vocab.to_json()))
    beat_times = [0.25 + 0.5 * i + (0.05 if i % 2 else 0.0) for i in range(17)]
    data = {"tokenizer_hash": vocab.hash, "ids": encode_score(song()[0], vocab), "meter": 4,
            "beat_times": beat_times, "downbeats": beat_times[::4]}
    path = tmp_path / "song.tokens.json"
    artifacts.write_artifact(artifacts.make_artifact("v2m.tokens", data, stage="test"), path)
    return path, tokenizer


def run(capsys, *args):
    code = main(["decode", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_decode_to_midi_follows_the_beat_grid(tmp_path, capsys, setup):
    tokens, tokenizer = setup
    code, out, err = run(capsys, tokens, "-o", tmp_path / "song.mid", "--tokenizer", tokenizer)
    assert code == 0 and out == "", err
    score = symusic.Score(str(tmp_path / "song.mid")).to("second")
    bar_chords = sorted({round(n.time, 3) for t in score.tracks for n in t.notes if n.pitch < 70})
    assert bar_chords == [0.25, 2.25, 4.25, 6.25]
    assert score.note_num() == song()[1].notes


def test_decode_to_wav_and_video(tmp_path, capsys, setup):
    from v2m import media

    tokens, tokenizer = setup
    code, _, err = run(capsys, tokens, "-o", tmp_path / "song.wav", "--tokenizer", tokenizer, "--sample-rate", 16000)
    assert code == 0, err
    assert media.ffprobe(tmp_path / "song.wav")["streams"][0]["sample_rate"] == "16000"
    video = make_video(tmp_path, seconds=2.0)
    code, _, err = run(capsys, tokens, "-o", tmp_path / "out.mp4", "--video", video, "--keep-audio", 0.2,
                       "--tokenizer", tokenizer)
    assert code == 0, err
    assert video_packets_md5(tmp_path / "out.mp4") == video_packets_md5(video)


def test_refusals_are_one_line_and_leave_nothing(tmp_path, capsys, setup, monkeypatch):
    tokens, tokenizer = setup
    cases = [
        ((tokens, "-o", tmp_path / "song.xyz"), "cannot decode to '.xyz'"),
        ((tokens, "-o", tmp_path / "song.mp4"), "needs --video"),
        ((tokens, "-o", tmp_path / "song.wav", "--soundfont", tmp_path / "none.sf2"), "soundfont"),
        ((tokens, "-o", tmp_path / "song.mp4", "--video", tokens), "ffprobe"),
        ((tmp_path / "missing.json", "-o", tmp_path / "song.mid"), "no such file"),
    ]
    for args, message in cases:
        code, out, err = run(capsys, *args, "--tokenizer", tokenizer)
        assert code == 1 and out == "" and message in err and len(err.strip().splitlines()) == 1, err
    # a tokens artifact from another tokenizer
    other = small_vocab().to_json()
    other["stats"] = {**other["stats"], "strong_min": 9}
    (tmp_path / "other.json").write_text(json.dumps(other))
    code, _, err = run(capsys, tokens, "-o", tmp_path / "song.mid", "--tokenizer", tmp_path / "other.json")
    assert code == 1 and "made with another tokenizer" in err
    # no fluidsynth on PATH (checked before any work)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    code, _, err = run(capsys, tokens, "-o", tmp_path / "song.wav", "--tokenizer", tokenizer)
    assert code == 1 and "fluidsynth not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["song.tokens.json", "tokenizer.json", "other.json"])


def test_muxing_onto_audio_only_input_is_refused(tmp_path, capsys, setup):
    tokens, tokenizer = setup
    code, _, _ = run(capsys, tokens, "-o", tmp_path / "music.wav", "--tokenizer", tokenizer, "--sample-rate", 16000)
    assert code == 0
    code, out, err = run(capsys, tokens, "-o", tmp_path / "out.mp4", "--video", tmp_path / "music.wav", "--tokenizer", tokenizer)
    assert code == 1 and "has no video stream" in err and not (tmp_path / "out.mp4").exists()
