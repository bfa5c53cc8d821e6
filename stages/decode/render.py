"""decode: tokens → MIDI (symusic) → audio (FluidSynth + a General MIDI soundfont) → a video with that sound (ffmpeg).

The Python pieces `run` calls: `tokens_to_score(data, vocab)`, `render_wav(score, path, ...)`,
`mux(video, audio, out, ...)`. Tools run with argument lists through v2m.media (never a shell); every
output goes through a temporary file and is renamed into place only when complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile
import symusic

from v2m import artifacts, media
from v2m.errors import V2MError
from v2m.stages.arrange.arranger import arrange as arrange_score
from v2m.stages.tokens.checks import check_tokens
from v2m.stages.tokens.convert import decode_ids
from v2m.stages.tokens.vocab import check_hash, load_tokenizer

MIDI_TARGETS = {".mid", ".midi"}
AUDIO_TARGETS = {".wav", ".flac"}
VIDEO_TARGETS = {".mp4", ".mov", ".mkv"}
TARGET_RMS_DBFS = -20.0  # loudness target (RMS of the whole render; EBU R128 would need K-weighting)
PEAK_CEILING_DBFS = -1.0  # never louder than this peak, whatever the RMS target asks
RENDER_BLOCK = 1 << 16  # audio frames per block when levelling a render (~1.5 s at 44.1 kHz)
RELEASE = 0.15  # s: the last notes' release is faded over this before the audio ends with the video
AUDIO_CODEC = {".mp4": "aac", ".mov": "aac", ".mkv": "aac"}


def target_of(path: str | Path) -> str:
    """'midi' | 'audio' | 'video' from the output's extension; an unknown one is a clear error."""
    suffix = Path(path).suffix.lower()
    if suffix in MIDI_TARGETS:
        return "midi"
    if suffix in AUDIO_TARGETS:
        return "audio"
    if suffix in VIDEO_TARGETS:
        return "video"
    known = ", ".join(sorted(MIDI_TARGETS | AUDIO_TARGETS | VIDEO_TARGETS))
    raise V2MError(f"{path}: cannot decode to '{suffix or 'no extension'}'", f"use one of: {known}")


def tokens_to_score(data: dict, vocab, *, sample: int = 0, program: int = 0):
    """A v2m.tokens payload → symusic.Score with the tempo map from its beat grid (or its controls')."""
    check_hash(data.get("tokenizer_hash"), vocab, "the tokens artifact")
    ids = data["ids"] if sample == 0 else (data.get("samples") or [])[sample - 1:sample]
    if sample and not ids:
        raise V2MError(f"the tokens artifact has no sample {sample}", f"it has {1 + len(data.get('samples') or [])}")
    ids = ids if sample == 0 else ids[0]
    controls = data.get("controls") or {}
    beat_times = data.get("beat_times") or controls.get("beat_times")
    downbeats = data.get("downbeats") or controls.get("downbeats")
    velocities = [int(b.get("velocity", 90)) for b in controls.get("bars", [])] or None
    return decode_ids(ids, vocab, beat_times=beat_times, downbeats=downbeats, velocities=velocities,
                      tempo_bpm=controls.get("tempo_bpm"), program=program, end=music_end(data))


def music_end(data: dict) -> float | None:
    """Where the music of a tokens payload ends, in seconds: the video's length when it was made for a video
    (its controls carry the duration), else None (a MIDI's own tokens end with their last bar)."""
    duration = (data.get("controls") or {}).get("duration")
    return float(duration) if duration else None


def music_score(data: dict, vocab, *, sample: int = 0, program: int = 0, arrange: bool = True):
    """(music, melody) for a v2m.tokens payload: the generated line with its beat-grid tempo map, and the same
    line arranged with the style `generate` recorded (`data["arrange"]`: settings + seed, so custom styles replay
    without their TOML). Without a record, or with `arrange=False`, music is the melody itself."""
    melody = tokens_to_score(data, vocab, sample=sample, program=program)
    given = part_scores(data, vocab, program=program) if sample == 0 else {}
    record = data.get("arrange")
    if not arrange or not record:
        return with_parts(melody, given), melody
    return arrange_score(melody, data.get("controls") or {}, record["settings"], seed=record["seed"],
                         given=given), melody


def part_scores(data: dict, vocab, *, program: int = 0) -> dict:
    """The other parts a multi-track model wrote (`data["parts"]`: role → ids on the same bars, the diffusion
    backend's bass and accompaniment) as Scores on the same tempo map as the melody; {} for a single line."""
    return {role: tokens_to_score({**data, "ids": ids}, vocab, program=program)
            for role, ids in sorted((data.get("parts") or {}).items()) if ids}


def with_parts(melody, given: dict):
    """The melody with the given parts' tracks beside it (named by role), for music without an arrangement."""
    if not given:
        return melody
    out = melody.copy()
    for track in out.tracks:
        track.name = "melody"
    for role, part in given.items():
        for track in part.tracks:
            track = track.copy()
            track.name = role
            out.tracks.append(track)
    return out


def midi_bytes(score) -> bytes:
    """A symusic.Score as Standard MIDI File bytes."""
    return bytes(score.dumps_midi())


# ---------------------------------------------------------------- audio

def render_wav(score, path: str | Path, *, soundfont: str | Path | None = None, sample_rate: int = 44100,
               program: int | None = None, normalise: bool = True, length: float | None = None) -> Path:
    """Render `score` with FluidSynth to `path` (.wav or .flac by extension), RMS-normalised to -20 dBFS
    with a -1 dBFS peak ceiling. `program` (GM 0..127) replaces every pitched track's instrument. With
    `length` (seconds: the video's) the audio is exactly that long — FluidSynth's release tail past it is
    faded out over RELEASE seconds and cut, a shorter render padded with silence."""
    path = Path(path)
    if path.suffix.lower() not in AUDIO_TARGETS:
        raise V2MError(f"{path}: audio output must be .wav or .flac")
    fluidsynth = media.require("fluidsynth")
    font = media.find_soundfont(soundfont)
    if not 8000 <= int(sample_rate) <= 192000:
        raise V2MError(f"sample rate {sample_rate} Hz is out of range", "use 8000..192000, e.g. --sample-rate 44100")
    score = score.copy()
    if program is not None:
        for track in score.tracks:
            if not track.is_drum:
                track.program = int(program)
    with artifacts.work_folder(path.parent) as tmp:
        midi_path, raw_path = Path(tmp) / "in.mid", Path(tmp) / "raw.wav"
        midi_path.write_bytes(midi_bytes(flatten_tempo(score)))
        media.run_tool([fluidsynth, "-q", "-n", "-i", "-F", str(raw_path), "-r", str(int(sample_rate)), "-T", "wav",
                        "-g", "0.5", os.path.abspath(font), os.path.abspath(midi_path)], what="rendering with FluidSynth",
                       timeout=600)  # absolute paths: a soundfont named `-x.sf2` is never read as an option
        # two passes over the render in blocks (level, then scaled copy): memory stays flat however long the music
        with soundfile.SoundFile(str(raw_path)) as raw:
            if not raw.frames:
                raise V2MError("FluidSynth rendered no audio (the music is empty)")
            squares, peak = 0.0, 0.0
            for block in raw.blocks(blocksize=RENDER_BLOCK, dtype="float32", always_2d=True):
                squares += float(np.sum(np.square(block, dtype=np.float64)))
                peak = max(peak, float(np.max(np.abs(block))))
            rms = float(np.sqrt(squares / (raw.frames * raw.channels)))
            gain = loudness_gain(rms, peak) if normalise else 1.0
            raw.seek(0)
            fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
            frames = raw.frames if length is None else int(round(length * raw.samplerate))
            fade = int(RELEASE * raw.samplerate) if length is not None else 0
            with artifacts.atomic_path(path) as tmp_out, \
                    soundfile.SoundFile(str(tmp_out), "w", raw.samplerate, raw.channels, "PCM_16", format=fmt) as out:
                written = 0
                for block in raw.blocks(blocksize=RENDER_BLOCK, dtype="float32", always_2d=True):
                    block = block[:max(0, frames - written)] * gain
                    if fade:  # the fade's gain for these frames (1 before the fade, 0 at the end)
                        position = written + np.arange(len(block))
                        block *= np.clip((frames - position) / fade, 0.0, 1.0)[:, None]
                    out.write(block.astype(np.float32))
                    written += len(block)
                if written < frames:
                    out.write(np.zeros((frames - written, raw.channels), np.float32))
    return path


def flatten_tempo(score, ticks_per_second: int = 1000):
    """The same notes at one fixed tempo (1 tick = 1 ms), for rendering.

    FluidSynth 2.3's file player loses up to one audio period at every tempo change: a beat grid with a
    tempo change per beat drifted 70 ms in 16 beats (tests/stages/decode/test_render.py measures this). With the
    tempo map baked into the note times there are no tempo changes left to drift on.
    """
    seconds = score.to("second")
    flat = symusic.Score(ticks_per_second)
    flat.tempos = [symusic.Tempo(0, 60.0)]
    tracks = []
    for track in seconds.tracks:
        out = symusic.Track(track.name, track.program, track.is_drum)
        arr = track.notes.numpy()
        if len(arr["time"]):
            start = np.round(arr["time"] * ticks_per_second).astype(np.int32)
            length = np.maximum(np.round(arr["duration"] * ticks_per_second).astype(np.int32), 1)
            out.notes = symusic.Note.from_numpy(start, length, arr["pitch"], arr["velocity"])
        tracks.append(out)
    flat.tracks = tracks
    return flat


def normalise_loudness(audio: np.ndarray, target_dbfs: float = TARGET_RMS_DBFS,
                       ceiling_dbfs: float = PEAK_CEILING_DBFS) -> np.ndarray:
    """Scale to the RMS target, then down if the peak would pass the ceiling. Silence stays silence."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    gain = loudness_gain(rms, float(np.max(np.abs(audio))) if audio.size else 0.0, target_dbfs, ceiling_dbfs)
    return audio if gain == 1.0 else (audio * gain).astype(np.float32)


def loudness_gain(rms: float, peak: float, target_dbfs: float = TARGET_RMS_DBFS,
                  ceiling_dbfs: float = PEAK_CEILING_DBFS) -> float:
    """The gain that brings `rms` to the target without `peak` passing the ceiling (1 for silence)."""
    if rms <= 1e-9:
        return 1.0
    return min(10 ** (target_dbfs / 20) / rms, 10 ** (ceiling_dbfs / 20) / peak)


# ---------------------------------------------------------------- video

def video_info(path: str | Path) -> dict:
    """{'duration': s, 'has_audio': bool} of a file with a video stream; a clear error when it has none."""
    info = media.ffprobe(path)
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")]
    if not video:
        raise V2MError(f"{path}: has no video stream to put the music under", "pass a video file with --video")
    duration = video[0].get("duration") or (info.get("format") or {}).get("duration")
    if duration is None:
        raise V2MError(f"{path}: ffprobe reports no duration for its video stream")
    return {"duration": float(duration), "has_audio": any(s.get("codec_type") == "audio" for s in streams)}


def mux(video: str | Path, audio: str | Path, out: str | Path, *, keep_audio: float = 0.0, fade_s: float = 0.5) -> Path:
    """`video` with `audio` as its sound → `out`. The video stream is copied bit for bit; the music is
    padded/trimmed to the video's length with a `fade_s` fade-out; `keep_audio` (0..1) mixes the video's
    own sound under it at that gain."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in VIDEO_TARGETS:
        raise V2MError(f"{out}: muxed output must be one of {', '.join(sorted(VIDEO_TARGETS))}")
    if not 0.0 <= keep_audio <= 1.0:
        raise V2MError(f"--keep-audio {keep_audio} is out of range", "use a gain between 0 and 1, e.g. 0.2")
    info = video_info(video)
    duration = info["duration"]
    fade = max(0.0, min(fade_s, duration / 4))
    music = f"[1:a]aformat=sample_fmts=fltp:channel_layouts=stereo,apad,atrim=0:{duration:.6f}," \
            f"afade=t=out:st={max(duration - fade, 0):.6f}:d={fade:.6f}"
    if keep_audio > 0 and info["has_audio"]:
        graph = f"{music}[m];[0:a]aformat=sample_fmts=fltp:channel_layouts=stereo,volume={keep_audio:.4f},apad," \
                f"atrim=0:{duration:.6f}[o];[m][o]amix=inputs=2:duration=first:normalize=0[a]"
    else:
        graph = f"{music}[a]"
    with artifacts.atomic_path(out) as tmp:
        media.run_tool(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", media.file_arg(video), "-i", media.file_arg(audio),
                        "-filter_complex", graph, "-map", "0:v:0", "-map", "[a]", "-c:v", "copy",
                        "-c:a", AUDIO_CODEC[suffix], "-b:a", "192k", "-t", f"{duration:.6f}", media.file_arg(tmp)],
                       what=f"muxing {out}", timeout=1800)
        # a truncated download keeps its index: ffprobe reports the full length, the copy stops where the data
        # does. The muxed file's own video stream says how much picture there really was.
        readable = _video_seconds(tmp)
        if readable < duration - max(0.5, 0.02 * duration):
            raise V2MError(f"{video}: the video is unreadable past {readable:.1f} s of its {duration:.1f} s "
                           "(a truncated or damaged file)", "pass the complete video")
    return out


def _video_seconds(path: Path) -> float:
    """Seconds of picture in a media file: its first video stream's duration (0 when there is none)."""
    info = media.ffprobe(path)
    video = [s for s in info.get("streams", []) if s.get("codec_type") == "video"]
    try:
        return float(video[0].get("duration") or (info.get("format") or {}).get("duration") or 0.0) if video else 0.0
    except ValueError:
        return 0.0


def decode_file(input: str, output: str, *, video: Path | None = None, keep_audio: float = 0.0,
                soundfont: Path | None = None, sample_rate: int = 44100, program: int = 0, sample: int = 0,
                tokenizer: Path | None = None, arrange: str = "recorded", force: bool = False) -> int:
    """`v2m decode`: the tokens artifact at `input` ("-": stdin) → `output`, whose suffix picks MIDI, audio or a
    video with the music under it ("-": MIDI on stdout). Missing tools fail before any work. Returns the notes."""
    to_stdout = output == "-"
    target = "midi" if to_stdout else target_of(output)
    if target == "video" and video is None:
        raise V2MError(f"{output}: a video output needs --video SRC", "pass the video to put the music under")
    if video is not None and target != "video":
        raise V2MError("--video is only used for .mp4/.mov/.mkv output")
    if arrange not in ("recorded", "none"):
        raise V2MError(f"--arrange {arrange!r}: expected 'recorded' or 'none'")
    artifacts.check_output(output, force, inputs=[input, video, soundfont, tokenizer])
    if target in ("audio", "video"):
        media.require("fluidsynth")
        media.find_soundfont(soundfont)
        if target == "video":
            media.require("ffmpeg")
            video_seconds = video_info(video)["duration"]
    tokens = artifacts.read_artifact(input, "v2m.tokens")
    vocab = load_tokenizer(tokenizer)
    check_hash(tokens["data"].get("tokenizer_hash"), vocab, "the tokens artifact")
    check_tokens(tokens["data"], vocab, "stdin" if input == "-" else input)
    arranged = arrange == "recorded" and bool(tokens["data"].get("arrange"))
    score, _ = music_score(tokens["data"], vocab, sample=sample, program=program, arrange=arranged)
    # an arranged score carries the style's instruments; --program then only sets the melody's (in tokens_to_score)
    program = None if arranged else program
    length = music_end(tokens["data"])
    if target == "video" and length is not None and video_seconds < length - max(0.5, 0.02 * length):
        raise V2MError(f"{video}: the video is {video_seconds:.1f} s, shorter than the {length:.1f} s of music made for "
                       "it", "pass the video the music was made for (a complete copy)")
    if target == "midi":
        artifacts.write_output(midi_bytes(score), output, force, binary=True)
    elif target == "audio":
        render_wav(score, output, soundfont=soundfont, sample_rate=sample_rate, program=program, length=length)
    else:
        with artifacts.work_folder(Path(output).parent) as tmp:
            wav = render_wav(score, Path(tmp) / "music.wav", soundfont=soundfont, sample_rate=sample_rate,
                             program=program, length=length)
            mux(video, wav, output, keep_audio=keep_audio)
    return score.note_num()
