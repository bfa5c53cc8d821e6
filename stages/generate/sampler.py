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

import symusic
import torch

from v2m.artifacts import sniff, work_folder
from v2m.errors import V2MError
from v2m.models.engines.decoder import DecoderPool, decoder_for
from v2m.models.sampling import Sampling
from v2m.stages.arrange.arranger import arrangement_settings
from v2m.stages.arrange.styles import load_style
from v2m.stages.decode.render import music_end, music_score, render_wav
from v2m.stages.evaluate.beat_metrics import beat_f_measure
from v2m.stages.evaluate.report import SAMPLE_RATE, heard_beats, read_audio
from v2m.stages.generate.motifs import PITCH, Conductor
from v2m.stages.generate.plan import (
    Plan,
    build_plan,
    extend_grid,
    free_mask,
    melody_settings,
    shaped_controls,
    theme_bars,
)
from v2m.stages.tokens.convert import encode_score
from v2m.stages.tokens.structure import bar_beats, check_structure, plan_structure

DEFAULT_STYLE = "pop"  # the arranger's style when none is given


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


# ---------------------------------------------------------------- the decoding loop

def sample_pieces(model, plan: Plan, vocab, config: GenerateConfig, *, window: int, banned=None,
                  compile: bool = False, decoders: DecoderPool | None = None, controls: dict | None = None,
                  structure: dict | None = None) -> list[list[int]]:
    """Decode `config.num_samples` pieces following `plan`; each is BOS..EOS with every bar's opening forced.

    `window` is the KV cache length in tokens; `banned` a bool [V] mask of tokens never sampled. Uses the
    models' static-cache Decoder (compiled with CUDA graphs when `compile`). Deterministic for a given seed:
    one torch.Generator drives every draw.
    """
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

    conductor = Conductor(structure, plan, vocab, controls or {"bars": [], "meter": 4}, n, banned)
    pieces = [list(plan.head) for _ in range(n)]
    queues, whole = [], []
    for b in range(n):
        queue, complete = conductor.opening(b, 0) if n_bars else ([vocab.eos], True)
        queues.append(queue)
        whole.append(complete)
    bar_of = [0] * n                  # index of the bar each sample is in
    free_in_bar = [0] * n             # tokens sampled since that bar's forced opening
    finished = [False] * n
    sampling = Sampling(config.temperature, config.top_k, config.top_p)
    # draw/step_draw sample on the device and return host ids: on CUDA one graph replay per token (models/engines/graph.py)
    drawn = decoder.draw(decoder.prefill(torch.tensor([pieces[0]] * n, device=device)), sampling,
                         conductor.mask(queues, finished), generator)
    pos = len(plan.head)
    while True:
        step = []
        for b in range(n):
            if finished[b]:
                token = vocab.pad
            elif queues[b]:
                token = queues[b].pop(0)
                token = drawn[b] if token == PITCH else token  # a restated rhythm's pitch, drawn
            else:
                # a bar forced whole (a theme bar, a restatement, the final chord) is closed as forced; other bars
                # are sampled until the model closes the bar (or the piece) itself, or it is closed for it: either
                # way the video's next bar follows
                token = vocab.bar_id if whole[b] else conductor.substitute(b, drawn[b])
                free_in_bar[b] += 1
                if token in (vocab.bar_id, vocab.eos) or free_in_bar[b] > config.max_bar_tokens:
                    bar_of[b] += 1
                    free_in_bar[b] = 0
                    if bar_of[b] >= n_bars:
                        token = vocab.eos
                    else:
                        queues[b], whole[b] = conductor.opening(b, bar_of[b])
                        token = queues[b].pop(0)
            conductor.observe(b, token)
            finished[b] = finished[b] or token == vocab.eos
            pieces[b].append(token)
            step.append(token)
        if all(finished):
            break
        mask = conductor.mask(queues, finished)
        if pos >= window:  # slide: pinned head and theme + the most recent half window, re-prefilled at once
            context = [pinned + piece[len(pinned):][-(window // 2):] for piece in pieces]
            drawn = decoder.draw(decoder.prefill(torch.tensor(context, device=device)), sampling, mask, generator)
            pos = len(context[0])
            continue
        drawn = decoder.step_draw(step, pos, sampling, mask, generator)
        pos += 1
    return [_until_eos(piece, vocab.eos) for piece in pieces]


def _until_eos(piece: list[int], eos: int) -> list[int]:
    return piece[: piece.index(eos) + 1] if eos in piece else piece + [eos]


# ---------------------------------------------------------------- the stage

def generate(model, vocab, controls: dict, config: GenerateConfig, *, prime_ids: list[int] | None = None,
             rerank: bool = False, compile: bool = False, decoders: DecoderPool | None = None,
             arrangement: dict | None = None, style=None) -> dict:
    """Controls data (a v2m.controls payload) → a v2m.tokens payload.

    `model` is an nn.Module with new_cache/forward_cached (LoadedModel.model). With `rerank`, the
    `num_samples` candidates are scored by what the report will show — the beats heard in each candidate's
    rendered mix (arranged as `arrangement` says, the record decode replays) against the video's beats — and
    the best becomes `ids` (ties: the earlier; so never one that scores below candidate 0); all scores are
    recorded. Without it, the first sample is `ids` and the others go to `samples`. `style` (a name, path or
    Style) shapes the line itself (plan.melody_settings: density, onset grid, shortest note, register, feel);
    without it only the picture's register limits the pitches.
    """
    if vocab.hash != controls.get("tokenizer_hash", vocab.hash):
        raise V2MError("the controls were made with another tokenizer than the model's",
                       "re-run `v2m encode-tokens RHYTHM.json --tokenizer` with the model's tokenizer, "
                       "or generate from the rhythm artifact")
    if config.bars is not None or not controls.get("bars"):
        controls = extend_grid(controls, config.bars or len(controls.get("bars", [])))
        controls.pop("structure", None)  # planned for other bars: planned again below
    if controls.get("structure") is not None:
        check_structure(controls["structure"], len(controls["bars"]), bar_beats(controls))
    else:
        controls = {**controls, "structure": plan_structure(controls)}
    settings = melody_settings(load_style(style), controls) if style is not None else None
    if settings:
        controls = shaped_controls(controls, settings, int(vocab.stats["n_density"]))
    theme = theme_bars(prime_ids, vocab, int(controls["meter"])) if prime_ids else None
    plan = build_plan(controls, vocab, theme)
    window = config.window or context_window(model)
    banned = free_mask(vocab, controls.get("register"), settings)
    pieces = sample_pieces(model, plan, vocab, config, window=window, banned=banned,
                           compile=cuda_engine(model) if compile else False,
                           decoders=decoders, controls=controls, structure=controls["structure"])

    data = {"tokenizer_hash": vocab.hash, "ids": pieces[0], "meter": int(controls["meter"]),
            "beat_times": controls["beat_times"], "downbeats": controls["downbeats"], "controls": controls}
    if settings:
        data["melody"] = settings
    if rerank and len(pieces) > 1:
        scores = [heard_score(piece, vocab, controls, arrangement) for piece in pieces]
        best = max(range(len(pieces)), key=lambda i: (scores[i], -i))
        data["ids"] = pieces[best]
        data["rerank"] = {"metric": "beat_f1 (heard in the rendered mix)", "scores": [round(s, 4) for s in scores],
                          "chosen": best}
        pieces = [pieces[best]] + [p for i, p in enumerate(pieces) if i != best]
    if len(pieces) > 1:
        data["samples"] = pieces[1:]
    return data


def cuda_engine(model) -> bool | str:
    """The compiled decode engine: on CUDA the graph of the eager kernels ("graph"). Inductor's kernels under the
    graph cost 15 s more warm-up in every process and decoded slower here (977 vs 1,533 steps/s on an H200,
    generate's loop at batch 1: bench/gpu_warmup.py, BENCHMARKS.md), so `generate` does not use them; elsewhere
    torch.compile's default (`True`)."""
    weight = next(model.parameters(), None)
    if weight is None or weight.device.type != "cuda":
        return True
    return "graph"


def context_window(model) -> int:
    """KV cache length: the model's maximum context (RoPE tables and caches are built for it)."""
    return int(model.config.max_len)


def heard_score(ids: list[int], vocab, controls: dict, arrangement: dict | None = None) -> float:
    """Beat F-measure (±70 ms) of the beats heard in a candidate's render against the video's beat grid: the
    candidate decoded and arranged as decode will (`arrangement`: the tokens artifact's record), rendered by
    FluidSynth as long as the video, its beats tracked by extract-rhythm's tracker as `evaluate` does; 0 for a
    candidate without notes."""
    data = {"tokenizer_hash": vocab.hash, "ids": ids, "beat_times": controls["beat_times"],
            "downbeats": controls["downbeats"], "controls": controls, "arrange": arrangement}
    score, _ = music_score(data, vocab)
    if score.note_num() == 0:
        return 0.0
    with work_folder() as tmp:
        wav = render_wav(score, Path(tmp) / "candidate.wav", length=music_end(data))
        _, beats = heard_beats(read_audio(wav), SAMPLE_RATE)
    if beats.size < 2:
        return 0.0
    return float(beat_f_measure(controls["beat_times"], beats).f1)


def prime_ids_from_midi(data: bytes, vocab, name: str) -> list[int]:
    """A --prime MIDI file's token ids (controls computed from the music, as in training)."""
    if sniff(data[:64]) != "midi":
        raise V2MError(f"{name}: --prime expects a MIDI file",
                       "pass a .mid file (v2m decode TOKENS -o theme.mid makes one)")
    try:
        score = symusic.Score.from_midi(data)
    except Exception as e:  # symusic raises plain RuntimeErrors on corrupt files
        raise V2MError(f"{name}: not a readable MIDI file ({e})")
    return encode_score(score, vocab)


def arrangement_record(style: str | None, arrange: bool, seed: int) -> dict | None:
    """What a tokens artifact records for `decode`/`run` about the arrangement: the style's name, resolved
    settings and seed (arrange/arranger.py), or None for the generated line alone (--arrange none)."""
    if not arrange:
        return None
    return arrangement_settings(style or DEFAULT_STYLE, seed=seed)
