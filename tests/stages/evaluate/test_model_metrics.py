"""Model metrics: NLL checked against known answers and a direct computation, KL, size, speed, tokenizer checks.

A tiny transformer (debug-sized) and a hand-built corpus (docs/ARTIFACTS.md, v2m.corpus) are made here.
"""

import math

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from v2m.artifacts import dumps, make_artifact
from v2m.errors import V2MError
from v2m.models.config import ModelConfig
from v2m.models.data import read_corpus
from v2m.models.loading import load_model, save_model
from v2m.models.registry import build_model
from v2m.stages.evaluate.model_metrics import ModelEvalConfig, check_tokenizers, model_metrics, nll_and_kl

VOCAB = 40
TOKENIZER = {"format": "test", "note": "stand-in tokenizer object, identified by its hash"}


def write_corpus(folder, tokenizer_hash="tok-a", pieces=12, seed=0):
    """A v2m.corpus folder: one test shard of `pieces` pieces (BOS .. EOS) of a simple repeating pattern + noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sequences = []
    for _ in range(pieces):
        body = (np.arange(60) % 7 + 3 + (rng.random(60) < 0.1) * rng.integers(0, 20, 60)) % VOCAB
        sequences.append(np.concatenate([[1], np.maximum(body, 3), [2]]))
    tokens = np.concatenate(sequences).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    save_file({"tokens": tokens, "offsets": offsets}, str(folder / "test-00000.safetensors"))
    data = {"tokenizer": TOKENIZER, "tokenizer_hash": tokenizer_hash, "vocab_size": VOCAB,
            "special": {"pad": 0, "bos": 1, "eos": 2},
            "splits": {"test": {"shards": ["test-00000.safetensors"], "pieces": pieces, "tokens": int(tokens.size)}},
            "stats": {}}
    (folder / "index.json").write_bytes(dumps(make_artifact("v2m.corpus", data, stage="encode-tokens")))
    return folder


def write_model(path, tokenizer_hash="tok-a", seed=0, zero=False):
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=128)
    model = build_model(config)
    if zero:  # all-zero embeddings → all-zero logits → the uniform distribution
        with torch.no_grad():
            model.embed.weight.zero_()
    save_model(path, model, config, TOKENIZER, tokenizer_hash, training={"note": "untrained, for tests"})
    return path


FAST = ModelEvalConfig(context=64, max_tokens=512, batch=4, prefill_tokens=32, decode_tokens=16, repeats=1)


def test_uniform_model_has_nll_log_v(tmp_path):
    corpus = read_corpus(write_corpus(tmp_path / "corpus"))
    loaded = load_model(write_model(tmp_path / "zero.safetensors", zero=True))
    out = nll_and_kl(loaded.model, corpus.load("test"), FAST, loaded.config.max_len)
    assert out["nll"] == pytest.approx(math.log(VOCAB), rel=1e-5)
    assert out["ppl"] == pytest.approx(VOCAB, rel=1e-4)


def test_nll_matches_a_direct_cross_entropy(tmp_path):
    corpus = read_corpus(write_corpus(tmp_path / "corpus"))
    split = corpus.load("test")
    loaded = load_model(write_model(tmp_path / "m.safetensors", seed=1))
    out = nll_and_kl(loaded.model, split, FAST, loaded.config.max_len)
    # the same windows by hand: non-overlapping, 64 tokens predicting the next 64, from the split's start
    n_windows = min(512 // 64, (len(split.tokens) - 1) // 64)
    x = torch.stack([torch.as_tensor(split.tokens[i * 64:i * 64 + 64]) for i in range(n_windows)])
    y = torch.stack([torch.as_tensor(split.tokens[i * 64 + 1:i * 64 + 65]) for i in range(n_windows)])
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(loaded.model(x).reshape(-1, VOCAB), y.reshape(-1)).item()
    assert out["nll"] == pytest.approx(expected, rel=1e-5)
    assert out["tokens_evaluated"] == n_windows * 64


def test_kl_zero_against_itself_positive_against_another(tmp_path):
    corpus = read_corpus(write_corpus(tmp_path / "corpus"))
    path = write_model(tmp_path / "m.safetensors", seed=1)
    loaded, same = load_model(path), load_model(path)
    other = load_model(write_model(tmp_path / "o.safetensors", seed=2))
    size = path.stat().st_size
    metrics = model_metrics(loaded, corpus.load("test"), FAST, size, reference=same, reference_size_bytes=size)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["nll_delta"] == pytest.approx(0.0, abs=1e-6) and metrics["size_ratio"] == 1.0
    assert metrics["params"] == sum(p.numel() for p in loaded.model.parameters())
    assert metrics["size_mb"] == pytest.approx(size / 1e6)
    assert metrics["decode_tok_s"] > 0 and metrics["prefill_tok_s"] > 0 and metrics["decode_speedup"] > 0
    different = model_metrics(loaded, corpus.load("test"), FAST, size, reference=other, measure_speed=False)
    assert different["kl"] > 1e-3
    # KL(p_ref || p) ≥ 0 and the NLLs are consistent with the reported delta
    assert different["nll_delta_abs"] == pytest.approx(different["nll"] - different["ref_nll"])


def test_tokenizer_mismatch_is_one_clear_line(tmp_path):
    corpus = read_corpus(write_corpus(tmp_path / "corpus", tokenizer_hash="tok-b"))
    loaded = load_model(write_model(tmp_path / "m.safetensors", tokenizer_hash="tok-a"))
    with pytest.raises(V2MError, match="different tokenizers") as info:
        check_tokenizers(loaded.meta, corpus)
    assert "\n" not in info.value.one_line()
