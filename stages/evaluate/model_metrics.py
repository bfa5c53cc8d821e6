"""Model quality and speed on a token corpus split: NLL/perplexity, KL against a reference, size, tokens/s.

Works on in-memory objects: a loaded model (`v2m.models.loading.load_model`), a corpus split
(`v2m.models.data`) and optionally a reference model, usually the float model a quantized one
was made from. KL is KL(p_ref ‖ p_model) of the next-token distributions, averaged over the
same positions the NLL is measured on (the direction llama.cpp's KL-divergence tool uses:
how much information is lost when the quantized model stands in for the reference).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from v2m.errors import V2MError
from v2m.models.data import eval_starts, gather_windows
from v2m.models.engines.decoder import Decoder


@dataclass(frozen=True)
class ModelEvalConfig:
    """How much to measure. Lengths in tokens; `context` 0 = the model's max_len (capped at 512)."""

    context: int = 0
    max_tokens: int = 32768      # predictions scored for NLL/KL (the split's first ones, fixed windows)
    batch: int = 8               # windows per forward pass
    prefill_tokens: int = 256    # prompt length for the prefill speed
    decode_tokens: int = 128     # greedy single-token steps for the decode speed
    repeats: int = 3             # speed runs; the fastest is reported (least disturbed by other processes)
    device: str = "cpu"


def check_tokenizers(model_meta: dict, corpus, what: str = "model") -> None:
    """A model and a corpus must come from the same tokenizer; otherwise the ids mean different things."""
    model_hash, corpus_hash = model_meta.get("tokenizer_hash", ""), corpus.tokenizer_hash
    if model_hash != corpus_hash:
        raise V2MError(f"the {what} and the corpus come from different tokenizers "
                       f"({what} {model_hash[:12] or 'none'}, corpus {corpus_hash[:12] or 'none'})",
                       "evaluate on a corpus made with the model's tokenizer (v2m encode-tokens), or the matching model")


def eval_context(max_len: int, requested: int) -> int:
    return min(requested or 512, int(max_len))


def _windows(split, context: int, max_tokens: int) -> np.ndarray:
    """Non-overlapping windows of context+1 tokens from the split's start (the windows training validates on)."""
    if len(split.tokens) < 2:
        raise V2MError(f"the '{split.name}' split is empty", "evaluate on a split that has tokens (--split)")
    context = min(context, len(split.tokens) - 1)
    return eval_starts(split, context, max_tokens), context


def nll_and_kl(model, split, config: ModelEvalConfig, max_len: int, reference=None) -> dict:
    """Mean NLL per token (nats) of `model` on `split`; with `reference`, its NLL and KL(p_ref ‖ p_model).

    `max_len` is the model's longest context (tokens); windows are `config.context` long, capped by it.
    """
    starts, context = _windows(split, eval_context(max_len, config.context), config.max_tokens)
    tokens = torch.as_tensor(split.tokens, device=config.device)
    total_nll = total_ref = total_kl = 0.0
    count = 0
    with torch.inference_mode():
        for i in range(0, len(starts), config.batch):
            x, y = gather_windows(tokens, starts[i:i + config.batch], context)
            logp = F.log_softmax(model(x).float(), dim=-1)
            total_nll += float(-logp.gather(-1, y[..., None]).sum())
            if reference is not None:
                ref_logp = F.log_softmax(reference(x).float(), dim=-1)
                total_ref += float(-ref_logp.gather(-1, y[..., None]).sum())
                total_kl += float((ref_logp.exp() * (ref_logp - logp)).sum())
            count += y.numel()
    out = {"nll": total_nll / count, "tokens_evaluated": float(count), "context": float(context)}
    out["ppl"] = math.exp(out["nll"])
    if reference is not None:
        out.update({"ref_nll": total_ref / count, "kl": total_kl / count})
        out["nll_delta_abs"] = out["nll"] - out["ref_nll"]
        out["nll_delta"] = out["nll_delta_abs"] / out["ref_nll"]  # relative: 0.01 = 1 % worse than the reference
    return out


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def speed(model, split, config: ModelEvalConfig, max_len: int) -> dict:
    """Prefill and greedy decode tokens/s at batch 1 through the static KV cache (the path `generate` uses)."""
    prefill = max(1, min(config.prefill_tokens, max_len - config.decode_tokens - 1, len(split.tokens)))
    decode = max(1, min(config.decode_tokens, max_len - prefill - 1))
    prompt = torch.as_tensor(split.tokens[:prefill], device=config.device)[None]
    best_prefill = best_decode = math.inf
    with torch.inference_mode():
        for run in range(config.repeats + 1):  # the first run warms up allocators and kernels; not counted
            decoder = Decoder(model, 1, prefill + decode + 1)  # eager, as generate runs on CPU (lean step)
            _sync(config.device)
            t0 = time.perf_counter()
            logits = decoder.prefill(prompt)
            _sync(config.device)
            t1 = time.perf_counter()
            ids = logits.argmax(-1, keepdim=True)
            for step in range(decode):
                ids = decoder.step(ids, prefill + step).argmax(-1, keepdim=True)
            _sync(config.device)
            t2 = time.perf_counter()
            if run > 0:
                best_prefill, best_decode = min(best_prefill, t1 - t0), min(best_decode, t2 - t1)
    return {"prefill_tok_s": prefill / best_prefill, "decode_tok_s": decode / best_decode}


def count_params(model) -> int:
    """Parameters of the model as built (a quantized backend reports its logical count through num_params)."""
    if hasattr(model, "num_params"):
        return int(model.num_params())
    return sum(p.numel() for p in model.parameters())


def model_metrics(loaded, split, config: ModelEvalConfig, size_bytes: int, reference=None,
                  reference_size_bytes: int | None = None, measure_speed: bool = True) -> dict:
    """All model metrics as {name: float}. `loaded`/`reference` are v2m.models.loading.LoadedModel."""
    ref_model = reference.model if reference is not None else None
    metrics = nll_and_kl(loaded.model, split, config, loaded.config.max_len, ref_model)
    params = count_params(loaded.model)
    metrics.update({"params": float(params), "size_mb": size_bytes / 1e6, "bits_per_param": 8 * size_bytes / max(params, 1)})
    if measure_speed:
        metrics.update(speed(loaded.model, split, config, loaded.config.max_len))
    if reference is not None:
        if reference_size_bytes:
            metrics["size_ratio"] = size_bytes / reference_size_bytes
        if measure_speed:
            # measured side by side in the same process, so the ratio is fair on a busy machine
            ref_speed = speed(ref_model, split, config, reference.config.max_len)
            metrics["decode_speedup"] = metrics["decode_tok_s"] / ref_speed["decode_tok_s"]
            metrics["prefill_speedup"] = metrics["prefill_tok_s"] / ref_speed["prefill_tok_s"]
    return metrics
