"""generate: controls (from a video) → a token sequence, sampled from the model with the controls forced.

The piece is built bar by bar. After BOS the global controls (tempo class, mode) are forced; each bar then
opens with a forced `Bar` token, that bar's control tokens from the video (density, per-beat strength,
phrase) and the video's meter as a `TimeSig` token, interleaved as in training (CMT-style: Di et al. 2021,
"Video Background Music Generation with Controllable Music Transformer"). Between two bars the model samples
freely; when it emits `Bar` (or EOS, or runs past `max_bar_tokens`) the next bar of the video is forced in its
place. So the piece has exactly as many bars as the video, and `decode` maps bar i onto the video's downbeat i
with the tempo map of its beat times.

Any length: a static KV cache of `window` tokens is filled one token at a time; when it is full the context is
rebuilt from the pinned head (BOS, global controls, and the --prime theme, which stays in every window the way
Theme Transformer (Shih et al. 2022) conditions every segment on its theme) plus the most recent half window,
re-prefilled in one forward pass. Memory is bounded by the window, never by the video's length.

Register from the picture: the controls' `register` (low/mid/high) limits the pitches that may be sampled (a
logit mask). Dynamics are not sampled: the vocabulary has no velocity tokens, and each bar's `velocity` control
is applied to its notes by `decode`.

--num-samples N decodes N sequences as one batch; all take one step per token, so their cache positions stay
aligned even though each sample reaches its bar lines at different steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2m.errors import V2MError

DEFAULT_STYLE = "pop"  # the arranger's style when none is given
# MIDI pitch ranges a register allows (inclusive); wide enough for a melody and its accompaniment
REGISTER_PITCHES = {"low": (28, 72), "mid": (40, 84), "high": (52, 96)}


@dataclass(frozen=True)
class GenerateConfig:
    """Sampling settings. `bars` None = as many bars as the video; `window` 0 = the model's training context."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    seed: int = 0
    num_samples: int = 1
    bars: int | None = None
    window: int = 0
    max_bar_tokens: int = 96  # a bar longer than this (tokens after its controls) is closed by force

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError("top_k must be ≥ 0 and top_p in (0, 1]")
        if self.num_samples < 1:
            raise ValueError("num_samples must be ≥ 1")
        if self.bars is not None and self.bars < 1:
            raise ValueError("bars must be ≥ 1")
        if self.window < 0:
            raise ValueError("window must be ≥ 0")


# ---------------------------------------------------------------- the model

def model_path(path: str | Path | None) -> Path:
    """The checkpoint to load: `path`, or presets/default.safetensors for None; one clear line if it is missing."""
    from v2m.config import presets_dir

    if path is None:
        default = presets_dir() / "default.safetensors"
        if not default.is_file():
            raise V2MError("no model given and presets/default.safetensors does not exist",
                           "pass --model CHECKPOINT.safetensors (make one with: v2m train CORPUS -o model.safetensors)")
        return default
    if not Path(path).is_file():
        raise V2MError(f"{path}: no such checkpoint")
    return Path(path)


def open_model(path: str | Path | None, backend: str | None = None, kernel: str = "auto", device: str = "cpu"):
    """Load a checkpoint (None = the default preset) and its vocabulary: returns (LoadedModel, Vocab)."""
    import v2m.quant  # noqa: F401 — registers the loader of quantized checkpoints
    from v2m.models.loading import load_model
    from v2m.stages.tokens import load_tokenizer

    path = model_path(path)
    if kernel != "auto":  # a misspelt name is an error even for a float model, which runs no kernel
        from v2m.quant.kernels import KERNELS

        KERNELS.get(kernel)
    loaded = load_model(path, device=device, kernel=kernel)
    if backend is not None and loaded.backend != backend:
        raise V2MError(f"{path}: a '{loaded.backend}' checkpoint, but --backend {backend} was asked for",
                       f"pass --backend {loaded.backend} or another checkpoint")
    return loaded, load_tokenizer(loaded.meta["tokenizer"])


# ---------------------------------------------------------------- what is forced

@dataclass(frozen=True)
class Plan:
    """The forced parts of a piece: `head` (BOS + global controls), then per bar its opening tokens
    (`Bar` + the bar's controls, and for --prime bars the theme's notes too). The head and the
    first `theme_bars` bars stay pinned in every sliding window."""

    head: tuple[int, ...]
    bars: tuple[tuple[int, ...], ...]
    theme_bars: int = 0


def extend_grid(controls: dict, bars: int) -> dict:
    """Controls with exactly `bars` bars: truncated, or extended by repeating the bar controls cyclically on
    a beat grid continued at the median beat interval (seconds). Beat times end at the last bar's end."""
    have = controls["bars"]
    if not have:
        raise V2MError("the controls have no bars (the video is shorter than one bar)",
                       "use a longer clip, or pass --bars N to generate N bars anyway")
    meter = int(controls["meter"])
    beat_times = list(controls["beat_times"])
    downbeats = list(controls["downbeats"])
    if len(beat_times) >= 2:
        import statistics

        step = statistics.median(b - a for a, b in zip(beat_times, beat_times[1:]))
    else:
        step = 60.0 / float(controls["tempo_bpm"])
    # the grid must reach one bar past the last downbeat so the last bar has an end
    while len(downbeats) < bars + 1:
        last = downbeats[-1]
        following = [t for t in beat_times if t > last + 1e-6]
        if len(following) < meter:
            last_beat = beat_times[-1]
            beat_times.extend([round(last_beat + step * k, 3) for k in range(1, meter + 1)])
            continue
        downbeats.append(following[meter - 1])
    end = downbeats[bars]
    out = dict(controls)
    out["bars"] = [dict(have[i % len(have)], start=downbeats[i]) for i in range(bars)]
    out["downbeats"] = downbeats[:bars]
    out["beat_times"] = [t for t in beat_times if t <= end + 1e-6]
    out["duration"] = max(float(controls.get("duration", 0.0)), end)
    return out


def build_plan(controls: dict, vocab, theme: list[list[int]] | None = None) -> Plan:
    """Forced tokens for every bar of `controls`; `theme` (a prime's bars, each its note tokens without
    `Bar` or controls) opens the piece: bar i < len(theme) is forced whole, under the video's controls."""
    from v2m.stages import controls as ctl

    head = (vocab.bos, *ctl.global_control_ids(controls, vocab))
    meter = time_signature_ids(vocab).get(int(controls["meter"]))
    bars = []
    for i, bar in enumerate(controls["bars"]):
        # the video's meter is forced too: a bar of the music always has as many beats as the video's bar
        opening = (vocab.bar_id, *ctl.bar_control_ids(bar, controls, vocab), *([meter] if meter is not None else []))
        if theme and i < len(theme):
            opening = opening + tuple(theme[i])
        bars.append(opening)
    return Plan(head=head, bars=tuple(bars), theme_bars=min(len(theme or ()), len(bars)))


def time_signature_ids(vocab) -> dict[int, int]:
    """Beats per bar → the id of the TimeSig token of that many quarter-note beats (MidiTok REMI's `TimeSig_4/4`)."""
    ids = {}
    for token, name in enumerate(vocab.token_names()):
        if name.startswith("TimeSig_") and name.endswith("/4"):
            ids[int(name[len("TimeSig_"):-2])] = token
    return ids


def theme_bars(prime_ids: list[int], vocab) -> list[list[int]]:
    """A prime's bars as lists of note tokens: split at `Bar`; controls, time signatures and specials dropped."""
    special = {vocab.bos, vocab.eos, vocab.pad, *time_signature_ids(vocab).values()}
    bars: list[list[int]] = []
    for token in prime_ids:
        if token == vocab.bar_id:
            bars.append([])
        elif bars and token not in special and not vocab.is_control(token):
            bars[-1].append(token)
    return bars if any(bars) else []  # empty bars inside a theme are rests, kept


# ---------------------------------------------------------------- logit masks

def free_mask(vocab, register: str | None):
    """Bool [V], True where a token may NOT be sampled between bar lines: specials other than EOS, every
    control token (controls come only from the video), time signatures (the video's meter is forced after
    each `Bar`), drum pitches (the line is pitched; `arrange` adds the drums), pitches outside the register."""
    import torch

    names = vocab.token_names()
    banned = torch.zeros(len(names), dtype=torch.bool)
    banned[[vocab.bos, vocab.pad]] = True
    low, high = REGISTER_PITCHES.get(register or "", (0, 127))
    for token, name in enumerate(names):
        if vocab.is_control(token) or name.startswith(("TimeSig_", "PitchDrum_")):
            banned[token] = True
        elif name.startswith("Pitch_"):
            pitch = _number(name)
            banned[token] = pitch is not None and not low <= pitch <= high
    return banned


def _number(name: str) -> int | None:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


# ---------------------------------------------------------------- the decoding loop

def sample_pieces(model, plan: Plan, vocab, config: GenerateConfig, *, window: int, banned=None,
                  compile: bool = False, decoders=None) -> list[list[int]]:
    """Decode `config.num_samples` pieces following `plan`; each is BOS..EOS with every bar's opening forced.

    `window` is the KV cache length in tokens; `banned` a bool [V] mask of tokens never sampled. Uses the
    models' static-cache Decoder (compiled with CUDA graphs when `compile`). Deterministic for a given seed:
    one torch.Generator drives every draw.
    """
    import torch

    from v2m.models.engines.decoder import decoder_for
    from v2m.models.sampling import Sampling

    n, n_bars = config.num_samples, len(plan.bars)
    pinned = list(plan.head) + [t for bar in plan.bars[:plan.theme_bars] for t in bar]
    if len(pinned) > window // 2:
        raise V2MError(f"the prime theme is too long for the model's context "
                       f"({len(pinned)} pinned tokens, window {window})",
                       "pass a shorter --prime (a few bars)")
    decoder = decoder_for(model, n, window, compile, pool=decoders)
    device = decoder.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    banned = (banned if banned is not None else torch.zeros(model.config.vocab_size, dtype=torch.bool)).to(device)

    pieces = [list(plan.head) for _ in range(n)]
    queues = [list(plan.bars[0]) if n_bars else [vocab.eos] for _ in range(n)]
    bar_of = [0] * n                  # index of the bar each sample is in
    free_in_bar = [0] * n             # tokens sampled since that bar's forced opening
    finished = [False] * n
    sampling = Sampling(config.temperature, config.top_k, config.top_p)
    # draw/step_draw sample on the device and return host ids: on CUDA one graph replay per token (models/engines/graph.py)
    drawn = decoder.draw(decoder.prefill(torch.tensor([pieces[0]] * n, device=device)), sampling, banned, generator)
    pos = len(plan.head)
    while True:
        step = []
        for b in range(n):
            if finished[b]:
                token = vocab.pad
            elif queues[b]:
                token = queues[b].pop(0)
            else:
                # a theme bar is complete as forced; other bars are sampled until the model closes the bar
                # (or the piece) itself, or it is closed for it: either way the video's next bar follows
                token = vocab.bar_id if bar_of[b] < plan.theme_bars else drawn[b]
                free_in_bar[b] += 1
                if token in (vocab.bar_id, vocab.eos) or free_in_bar[b] > config.max_bar_tokens:
                    bar_of[b] += 1
                    free_in_bar[b] = 0
                    if bar_of[b] >= n_bars:
                        token = vocab.eos
                    else:
                        queues[b] = list(plan.bars[bar_of[b]])
                        token = queues[b].pop(0)
            finished[b] = finished[b] or token == vocab.eos
            pieces[b].append(token)
            step.append(token)
        if all(finished):
            break
        if pos >= window:  # slide: pinned head and theme + the most recent half window, re-prefilled at once
            context = [pinned + piece[len(pinned):][-(window // 2):] for piece in pieces]
            drawn = decoder.draw(decoder.prefill(torch.tensor(context, device=device)), sampling, banned, generator)
            pos = len(context[0])
            continue
        drawn = decoder.step_draw(step, pos, sampling, banned, generator)
        pos += 1
    return [_until_eos(piece, vocab.eos) for piece in pieces]


def _until_eos(piece: list[int], eos: int) -> list[int]:
    return piece[: piece.index(eos) + 1] if eos in piece else piece + [eos]


# ---------------------------------------------------------------- the stage

def generate(model, vocab, controls: dict, config: GenerateConfig, *, prime_ids: list[int] | None = None,
             rerank: bool = False, compile: bool = False, decoders=None) -> dict:
    """Controls data (a v2m.controls payload) → a v2m.tokens payload.

    `model` is an nn.Module with new_cache/forward_cached (LoadedModel.model). With `rerank`, the
    `num_samples` candidates are scored by rhythm agreement with the video (onset F-measure of the decoded
    music against the video's beats, evaluate's `onset_f1`) and the best becomes `ids`; all scores are recorded.
    Without it, the first sample is `ids` and the others go to `samples`.
    """
    if vocab.hash != controls.get("tokenizer_hash", vocab.hash):
        raise V2MError("the controls were made with another tokenizer than the model's",
                       "re-run `v2m encode-tokens RHYTHM.json --tokenizer` with the model's tokenizer, "
                       "or generate from the rhythm artifact")
    if config.bars is not None or not controls.get("bars"):
        controls = extend_grid(controls, config.bars or len(controls.get("bars", [])))
    theme = theme_bars(prime_ids, vocab) if prime_ids else None
    plan = build_plan(controls, vocab, theme)
    window = config.window or context_window(model)
    banned = free_mask(vocab, controls.get("register"))
    pieces = sample_pieces(model, plan, vocab, config, window=window, banned=banned, compile=compile,
                           decoders=decoders)

    data = {"tokenizer_hash": vocab.hash, "ids": pieces[0], "meter": int(controls["meter"]),
            "beat_times": controls["beat_times"], "downbeats": controls["downbeats"], "controls": controls}
    if rerank and len(pieces) > 1:
        scores = [rhythm_score(piece, vocab, controls) for piece in pieces]
        best = max(range(len(pieces)), key=lambda i: (scores[i], -i))
        data["ids"] = pieces[best]
        data["rerank"] = {"metric": "onset_f1", "scores": [round(s, 4) for s in scores], "chosen": best}
        pieces = [pieces[best]] + [p for i, p in enumerate(pieces) if i != best]
    if len(pieces) > 1:
        data["samples"] = pieces[1:]
    return data


def context_window(model) -> int:
    """KV cache length: the model's maximum context (RoPE tables and caches are built for it)."""
    return int(model.config.max_len)


def rhythm_score(ids: list[int], vocab, controls: dict) -> float:
    """Onset F-measure (±70 ms) of the decoded music's onsets against the video's beats, exactly as `evaluate`'s
    `onset_f1` (onsets merged within 30 ms); 0 for a candidate without notes."""
    from v2m.stages.evaluate import music_from_score
    from v2m.stages.metrics_rhythm import beat_f_measure
    from v2m.stages.tokens import decode_ids

    score = decode_ids(ids, vocab, beat_times=controls["beat_times"], downbeats=controls["downbeats"])
    try:
        onsets = music_from_score(score).onsets
    except V2MError:  # no notes at all
        return 0.0
    return float(beat_f_measure(controls["beat_times"], onsets).f1)


def prime_ids_from_midi(data: bytes, vocab, name: str) -> list[int]:
    """A --prime MIDI file's token ids (controls computed from the music, as in training)."""
    from v2m.artifacts import sniff
    from v2m.stages.tokens import encode_score

    if sniff(data[:64]) != "midi":
        raise V2MError(f"{name}: --prime expects a MIDI file",
                       "pass a .mid file (v2m decode TOKENS -o theme.mid makes one)")
    import symusic

    try:
        score = symusic.Score.from_midi(data)
    except Exception as e:  # symusic raises plain RuntimeErrors on corrupt files
        raise V2MError(f"{name}: not a readable MIDI file ({e})")
    return encode_score(score, vocab)


def arrangement_record(style: str | None, arrange: bool, seed: int) -> dict | None:
    """What a tokens artifact records for `decode`/`run` about the arrangement: the style's name, resolved
    settings and seed (stages/arrange.py), or None for the generated line alone (--arrange none)."""
    if not arrange:
        return None
    from v2m.stages.arrange import arrangement_settings

    return arrangement_settings(style or DEFAULT_STYLE, seed=seed)
