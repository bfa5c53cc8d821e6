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
from v2m.models.engines.graph import inductor_ready
from v2m.models.sampling import RowGenerators, Sampling
from v2m.stages.arrange.arranger import arrangement_settings
from v2m.stages.arrange.styles import load_style
from v2m.stages.decode.render import music_end, music_score, render_wav
from v2m.stages.evaluate.beat_metrics import beat_f_measure
from v2m.stages.evaluate.report import SAMPLE_RATE, heard_beats, read_audio
from v2m.stages.generate.motifs import PITCH, Conductor, Conductors
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

@dataclass
class Part:
    """One piece's share of a decoding batch: its plan, what its Conductor follows, its base banned mask [V], how
    many samples (rows) and the seed of its own generator (rows of several parts draw from their own streams)."""

    plan: Plan
    controls: dict | None = None
    structure: dict | None = None
    banned: torch.Tensor | None = None
    count: int = 1
    seed: int = 0

    def pinned(self) -> list[int]:
        """The head and the --prime theme's bars: kept in every sliding window."""
        return list(self.plan.head) + [t for bar in self.plan.bars[:self.plan.theme_bars] for t in bar]


def sample_parts(model, parts: list[Part], vocab, config: GenerateConfig, *, window: int, compile: bool = False,
                 decoders: DecoderPool | None = None, rows: int | None = None) -> list[list[list[int]]]:
    """Decode several pieces as one batch (one step per token for every row): each part's `count` samples, in
    rows of their own; `rows` pads the batch to a fixed size (unused rows are finished from the start).

    `window` is the KV cache length in tokens; a part's `banned` a bool [V] mask of tokens never sampled. Uses the
    models' static-cache Decoder (compiled with CUDA graphs when `compile`). Deterministic for given seeds: one
    part draws from one torch.Generator seeded with its seed. Several parts (or a padded batch) draw
    from one generator each (models/sampling.RowGenerators), so a part's noise does not depend on the other rows;
    with the batch padded to a fixed `rows`, a piece's tokens are the same whichever pieces share its batch
    (each row's arithmetic is its own: tests/stages/generate/test_batch.py, and on the GPU). All parts must pin
    the same number of tokens (head and theme), since the rows slide their windows together.
    Returns each part's samples.
    """
    counts = [part.count for part in parts]
    n = max(rows or 0, sum(counts))
    pinned = [part.pinned() for part in parts]
    if len({len(p) for p in pinned}) > 1 or len({len(part.plan.head) for part in parts}) > 1:
        raise ValueError("pieces decoded as one batch must pin as many tokens (head and theme)")
    if len(pinned[0]) > window // 2:
        raise V2MError(f"the prime theme is too long for the model's context "
                       f"({len(pinned[0])} pinned tokens, window {window})",
                       "pass a shorter --prime (a few bars)")
    decoder = decoder_for(model, n, window, compile, pool=decoders)
    device = decoder.device
    if len(parts) == 1 and n == counts[0]:
        generator = torch.Generator(device=device).manual_seed(parts[0].seed)
    else:
        starts = [sum(counts[:j]) for j in range(len(parts))]
        generator = RowGenerators([(a, a + part.count, torch.Generator(device=device).manual_seed(part.seed))
                                   for a, part in zip(starts, parts)])
    conductor = Conductors([Conductor(part.structure, part.plan, vocab, part.controls or {"bars": [], "meter": 4},
                                      part.count, _base_mask(part.banned, model).to(device)) for part in parts], n)
    owner = [j for j, part in enumerate(parts) for _ in range(part.count)]
    owner += [None] * (n - len(owner))  # padding rows
    plans = [parts[j].plan if j is not None else parts[0].plan for j in owner]
    row_pinned = [pinned[j] if j is not None else pinned[0] for j in owner]
    pieces = [list(plan.head) for plan in plans]
    queues, whole = [], []
    finished = [j is None for j in owner]
    for b, plan in enumerate(plans):
        queue, complete = conductor.opening(b, 0) if plan.bars and not finished[b] else ([vocab.eos], True)
        queues.append(queue)
        whole.append(complete)
    bar_of = [0] * n                  # index of the bar each sample is in
    free_in_bar = [0] * n             # tokens sampled since that bar's forced opening
    sampling = Sampling(config.temperature, config.top_k, config.top_p)
    # draw/step_draw sample on the device and return host ids: on CUDA one graph replay per token (models/engines/graph.py)
    drawn = decoder.draw(decoder.prefill(torch.tensor(pieces, device=device)), sampling,
                         conductor.mask(queues, finished), generator)
    pos = len(plans[0].head)
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
                    if bar_of[b] >= len(plans[b].bars):
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
            context = [keep + piece[len(keep):][-(window // 2):] for keep, piece in zip(row_pinned, pieces)]
            drawn = decoder.draw(decoder.prefill(torch.tensor(context, device=device)), sampling, mask, generator)
            pos = len(context[0])
            continue
        drawn = decoder.step_draw(step, pos, sampling, mask, generator)
        pos += 1
    out, at = [], 0
    for count in counts:
        out.append([_until_eos(piece, vocab.eos) for piece in pieces[at:at + count]])
        at += count
    return out


def _base_mask(banned: torch.Tensor | None, model) -> torch.Tensor:
    return banned if banned is not None else torch.zeros(model.config.vocab_size, dtype=torch.bool)


def _until_eos(piece: list[int], eos: int) -> list[int]:
    return piece[: piece.index(eos) + 1] if eos in piece else piece + [eos]


# ---------------------------------------------------------------- the stage

@dataclass
class Request:
    """One piece to generate, prepared (controls extended and shaped, structure planned, plan and masks built)
    and not yet sampled: what `generate` and `generate_many` share."""

    controls: dict
    settings: dict | None
    plan: Plan
    banned: torch.Tensor

    def part(self, config: GenerateConfig) -> Part:
        return Part(self.plan, self.controls, self.controls["structure"], self.banned, config.num_samples, config.seed)


def prepare(vocab, controls: dict, config: GenerateConfig, *, prime_ids: list[int] | None = None,
            style=None) -> Request:
    """Everything before sampling: the controls checked against the tokenizer, extended to `config.bars`, their
    structure planned (or a given one checked), shaped by the style's melody settings; the forced plan; the mask."""
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
    return Request(controls, settings, plan, free_mask(vocab, controls.get("register"), settings))


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
    request = prepare(vocab, controls, config, prime_ids=prime_ids, style=style)
    window = config.window or context_window(model)
    steps = len(request.plan.bars) * TOKENS_PER_BAR
    pieces = sample_parts(model, [request.part(config)], vocab, config, window=window,
                          compile=cuda_engine(model, steps, config.num_samples) if compile else False,
                          decoders=decoders)[0]
    return finish(request, pieces, vocab, rerank=rerank, arrangement=arrangement)


def generate_many(model, vocab, requests: list[Request], config: GenerateConfig, *, rows: int,
                  compile: bool = False, decoders: DecoderPool | None = None) -> list[list[list[int]]]:
    """The samples of several prepared pieces decoded as one batch of `rows` rows (padded: a piece's tokens do
    not depend on which pieces share the batch; sample_parts). Pieces that pin different numbers of tokens (a
    --prime theme) go in batches of their own. Returns each request's samples, in order."""
    window = config.window or context_window(model)
    out: list = [None] * len(requests)
    groups: dict[int, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(len(request.part(config).pinned()), []).append(i)
    for members in groups.values():
        for at in range(0, len(members), max(1, rows // config.num_samples)):
            chunk = members[at:at + max(1, rows // config.num_samples)]
            steps = max(len(requests[i].plan.bars) for i in chunk) * TOKENS_PER_BAR
            got = sample_parts(model, [requests[i].part(config) for i in chunk], vocab, config, window=window,
                               compile=cuda_engine(model, steps, rows) if compile else False, decoders=decoders,
                               rows=rows)
            for i, pieces in zip(chunk, got):
                out[i] = pieces
    return out


def finish(request: Request, pieces: list[list[int]], vocab, *, rerank: bool = False,
           arrangement: dict | None = None) -> dict:
    """The v2m.tokens payload of a request's sampled pieces (reranked by heard beats when asked)."""
    controls, settings = request.controls, request.settings
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


# When Inductor's fused kernels pay for their compile (bench/gpu_warmup.py on an H200, default model, batch 1: the
# graph of eager kernels warms up in 1.7 s and decodes 1,591 steps/s; over Inductor's kernels 3,075-3,111 steps/s
# after 32.8 s of warm-up with a cold cache, 6.5 s with a warm one): the decode steps from which the slower warm-up
# is won back.
INDUCTOR_STEPS_WARM = 16_000
INDUCTOR_STEPS_COLD = 100_000
TOKENS_PER_BAR = 28  # decode steps a bar takes, on average (5,522 steps for 200 bars of a 20 s clip's controls)


def cuda_engine(model, steps: int = 0, batch: int = 1) -> bool | str:
    """The compiled decode engine for a generation of about `steps` decode steps: on CUDA the graph of the eager
    kernels ("graph"), or the graph of Inductor's kernels ("graph+inductor") once the piece is long enough to win
    back its compile — sooner when this model's kernels are already in Inductor's cache from an earlier process
    (engines/graph.py `inductor_ready`); elsewhere torch.compile's default (`True`)."""
    weight = next(model.parameters(), None)
    if weight is None or weight.device.type != "cuda":
        return True
    threshold = INDUCTOR_STEPS_WARM if inductor_ready(model, batch) else INDUCTOR_STEPS_COLD
    return "graph+inductor" if steps >= threshold else "graph"


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
