"""run: every output of a video, completion markers and resume, error isolation in a batch, worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stages.generate.test_generate import debug_model  # noqa: F401  (fixture)

OUTPUTS = ("rhythm.json", "controls.json", "tokens.json", "mid", "wav", "mp4", "report.json", "done.json")


def small_video(path: Path, seed: int = 0, duration: float = 5.0, bpm: float = 120.0) -> dict:
    """A short, small synthetic clip with known beats (core/samples.py): fast to analyse, render and mux."""
    from v2m.samples import SampleSpec, write_video

    return write_video(path, SampleSpec(bpm=bpm, duration=duration, width=160, height=96, fps=15.0, seed=seed,
                                        motion="flash", cuts=0))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    truth = {name: small_video(folder / f"{name}.mp4", seed=i) for i, name in enumerate(("a", "b"))}
    (folder / "broken.mp4").write_bytes(b"this is not a video")
    return folder, truth


def setup_run(model_path, out: Path, folder: Path, names=None, **settings):
    from v2m.media import VIDEO_SUFFIXES, media_files
    from v2m.stages.run import video as run

    config = run.RunConfig(model=str(model_path), seed=1, **settings)
    videos = [v for v in media_files(folder, VIDEO_SUFFIXES) if names is None or v.stem in names]
    jobs = run.plan(videos, folder, out)
    return config, jobs, run.fingerprint(config, "model-sha")


def test_one_video_gets_every_output_then_resume_skips_it(tmp_path, clips, debug_model):  # noqa: F811
    from v2m import artifacts
    from v2m.stages.run import video as run

    folder, truth = clips
    config, jobs, expected = setup_run(debug_model[0], tmp_path / "out", folder, names={"a"}, candidates=2)
    engine = run.Engine(config)
    seen = []
    result = run.process(jobs[0], engine, expected, force=False, status=lambda key, what: seen.append(what))
    assert result.status == "done", result.error
    assert seen == [*run.STAGES, "done"]
    for suffix in OUTPUTS:
        assert (tmp_path / "out" / f"a.{suffix}").stat().st_size > 0
    tokens = artifacts.read_artifact(tmp_path / "out" / "a.tokens.json", "v2m.tokens")["data"]
    rhythm = artifacts.read_artifact(tmp_path / "out" / "a.rhythm.json", "v2m.rhythm")["data"]
    assert tokens["downbeats"] == rhythm["downbeats"][:len(tokens["downbeats"])]
    assert len(tokens["rerank"]["scores"]) == 2  # --candidates 2: the better of two by beat F
    report = artifacts.read_artifact(tmp_path / "out" / "a.report.json", "v2m.report")["data"]
    assert 0.0 <= report["metrics"]["onset_f1"] <= 1.0 and "onset_f1" in report["melody"]["metrics"]
    # the mix's beats are the ones heard in a.wav; the line alone (not rendered) has its tempo map's
    from v2m.stages.evaluate.report import BEATS_FROM_AUDIO

    assert report["labels"]["music_beats"] == BEATS_FROM_AUDIO  # the tracker extract-rhythm reads audio with
    assert report["melody"]["labels"]["music_beats"] == "tempo map"
    assert result.duration == pytest.approx(5.0, abs=0.2) and set(result.seconds) == set(run.STAGES)

    # the muxed video keeps the picture and has the new soundtrack, as long as the clip
    from v2m.media import ffprobe

    streams = {s["codec_type"]: s for s in ffprobe(tmp_path / "out" / "a.mp4")["streams"]}
    assert set(streams) == {"video", "audio"}
    assert float(ffprobe(tmp_path / "out" / "a.mp4")["format"]["duration"]) == pytest.approx(5.0, abs=0.15)

    # resume: a finished video is skipped; a missing output makes it redo the video
    mtime = (tmp_path / "out" / "a.done.json").stat().st_mtime_ns
    again = run.process(jobs[0], engine, expected, force=False)
    assert again.status == "skipped" and (tmp_path / "out" / "a.done.json").stat().st_mtime_ns == mtime
    (tmp_path / "out" / "a.wav").unlink()
    (tmp_path / "out" / ".a.k3j9x_2q.part.wav").write_bytes(b"left by a killed write")
    redone = run.process(jobs[0], engine, expected, force=False)
    assert redone.status == "done" and (tmp_path / "out" / "a.wav").exists()
    assert not list((tmp_path / "out").glob(".*part*"))
    # other settings: not vouched for by the marker, so redone
    other = run.fingerprint(run.RunConfig(model=str(debug_model[0]), seed=2), "model-sha")
    assert not run.is_done(jobs[0], other) and run.is_done(jobs[0], expected)


def test_batch_isolates_a_broken_file(tmp_path, clips, debug_model):  # noqa: F811
    from v2m.stages.run import batch as run_batch

    folder, _ = clips
    config, jobs, expected = setup_run(debug_model[0], tmp_path / "out", folder)
    results = run_batch.run_batch(jobs, config, expected, jobs=1)
    by_key = {r.key: r for r in results}
    assert [r.key for r in results] == ["a", "b", "broken"]
    assert by_key["a"].status == by_key["b"].status == "done"
    assert by_key["broken"].status == "failed" and "broken.mp4" in by_key["broken"].error
    assert "\n" not in by_key["broken"].error
    assert run_batch.exit_code(results) == 1
    assert not (tmp_path / "out" / "broken.done.json").exists()
    # a rerun only retries the failure
    again = run_batch.run_batch(jobs, config, expected, jobs=1)
    assert [r.status for r in again] == ["skipped", "skipped", "failed"]


def test_the_output_never_overwrites_the_input(tmp_path, clips):
    from v2m.errors import V2MError
    from v2m.stages.run import video as run

    folder, _ = clips
    with pytest.raises(V2MError, match="overwrite the input"):
        run.plan([folder / "a.mp4"], folder, folder)


def test_videos_inside_the_output_folder_are_never_inputs(tmp_path, clips, debug_model):  # noqa: F811
    """`run nest -o nest/scored` twice: the second run finds nest/scored/a.mp4 (its own output) and skips it
    instead of scoring it into nest/scored/scored/."""
    import shutil

    from v2m.stages.run import batch as run_batch
    from v2m.stages.run import video as run

    folder, _ = clips
    nest = tmp_path / "nest"
    nest.mkdir()
    shutil.copy(folder / "a.mp4", nest / "a.mp4")
    (nest / "scored").mkdir()
    shutil.copy(folder / "b.mp4", nest / "scored" / "a.mp4")  # what an earlier run left there
    jobs, _ = run_batch.prepare(nest, nest / "scored", run.RunConfig(model=str(debug_model[0])))
    assert [job.source for job in jobs] == [nest / "a.mp4"]
    assert [job.stem for job in jobs] == [nest / "scored" / "a"]


def test_two_videos_of_one_name_are_refused_before_any_work(tmp_path, clips):
    import shutil

    from v2m.errors import V2MError
    from v2m.stages.run import video as run

    folder, _ = clips
    shutil.copy(folder / "a.mp4", tmp_path / "a.mp4")
    shutil.copy(folder / "a.mp4", tmp_path / "a.mov")
    with pytest.raises(V2MError, match=r"a.mov and .*a.mp4 would both write .*out/a\.\*"):
        run.plan(sorted([tmp_path / "a.mp4", tmp_path / "a.mov"]), tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_marker_is_checked_against_outputs(tmp_path):
    from v2m.stages.run import video as run

    video = tmp_path / "v.mp4"
    video.write_bytes(b"video bytes")
    job = run.plan([video], None, tmp_path / "out")[0]
    assert job.marker == tmp_path / "out" / "v.done.json"
    assert not run.is_done(job, {})
    job.marker.parent.mkdir()
    job.marker.write_text("{not json")
    assert not run.is_done(job, {})


def test_a_failing_evaluate_waits_for_the_mux_and_leaves_no_partial_files(tmp_path, clips, debug_model, monkeypatch):  # noqa: F811
    """mux runs beside evaluate: when evaluate fails the video fails, the mux still finishes (or cleans up) before
    the error is reported, and nothing half-written or marked done is left."""
    from v2m.errors import V2MError
    from v2m.stages.run import video as run

    def broken(*args, **kwargs):
        raise V2MError("evaluate broke on purpose")

    folder, _ = clips
    config, jobs, expected = setup_run(debug_model[0], tmp_path / "out", folder, names={"a"})
    monkeypatch.setattr(run, "_evaluate", broken)
    result = run.process(jobs[0], run.Engine(config), expected, force=False)
    assert result.status == "failed" and "evaluate broke on purpose" in result.error
    assert not (tmp_path / "out" / "a.done.json").exists() and not (tmp_path / "out" / "a.report.json").exists()
    assert not list((tmp_path / "out").glob(".*part*"))
    assert (tmp_path / "out" / "a.mp4").stat().st_size > 0  # the mux had started and was waited for
