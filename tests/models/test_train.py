"""Training: it learns, is deterministic, resumes after kill -9 without loss, and DDP (gloo, 2 processes) matches."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.models.corpus import make_corpus
from tests.models.helpers import train_debug
from v2m.checkpoint import read_meta
from v2m.errors import V2MError
from v2m.models.baselines import bigram_nll, unigram_nll
from v2m.models.config import TrainConfig
from v2m.models.data import read_corpus
from v2m.models.loading import load_model
from v2m.models.train import RunOptions, lr_at, train

ROOT = Path(__file__).resolve().parents[2]
WEIGHT_KEYS = lambda d: {k: v for k, v in d.items() if not k.startswith(("optim.", "rng."))}  # noqa: E731


def env():
    """The subprocesses' environment: the repo first on the path, whatever else made v2m importable kept (on
    the GPU machine, scripts/device_env.sh's layout)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "V2M_QUIET": "1"}


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = WEIGHT_KEYS(load_file(str(a))), WEIGHT_KEYS(load_file(str(b)))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup=10, min_lr_ratio=0.1, steps=110)
    assert lr_at(0, 110, cfg) == pytest.approx(0.1) and lr_at(9, 110, cfg) == pytest.approx(1.0)
    assert lr_at(60, 110, cfg) == pytest.approx(0.55) and lr_at(110, 110, cfg) == pytest.approx(0.1)


def test_it_learns_beats_baselines_and_writes_side_files(tmp_path):
    corpus_dir, out, summary = train_debug(tmp_path, steps=150)
    corpus = read_corpus(corpus_dir)
    train_split, test_split = corpus.load("train"), corpus.load("test")
    test_pieces = [test_split.piece(p) for p in range(test_split.pieces)]
    uni = unigram_nll(train_split.tokens, test_pieces, corpus.vocab_size)
    bi = bigram_nll(train_split.tokens, train_split.offsets, test_pieces, corpus.vocab_size)
    assert summary["test_nll"] < 0.8 * bi < uni, (summary["test_nll"], bi, uni)
    meta = read_meta(out)
    assert meta["training"]["steps"] == 150 and meta["tokenizer_hash"] == corpus.tokenizer_hash
    assert (out.parent / "model.train.json").is_file() and "test NLL" in (out.parent / "model.md").read_text()
    assert load_model(out).model(torch.tensor([[1, 3, 10]])).shape == (1, 3, corpus.vocab_size)


def test_same_seed_same_weights(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    outs = [tmp_path / f"{i}" / "m.safetensors" for i in range(3)]
    for out, seed in zip(outs, (5, 5, 6)):
        # bit-identical weights are a CPU promise (a GPU's reductions are not ordered)
        train(RunOptions(str(corpus), str(out), "debug", {"steps": 15, "seed": seed}, device="cpu"))
    assert same_weights(outs[0], outs[1]) and not same_weights(outs[0], outs[2])


def test_kill_9_then_resume_gives_the_uninterrupted_weights(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    opts = {"steps": 200, "ckpt_every": 5, "eval_every": 100}
    whole = tmp_path / "whole" / "m.safetensors"
    train(RunOptions(str(corpus), str(whole), "debug", opts, device="cpu"))

    killed = tmp_path / "killed" / "m.safetensors"
    ckpt = killed.with_name("m.ckpt.safetensors")
    args = [sys.executable, "-m", "v2m", "train", str(corpus), "-o", str(killed), "--preset", "debug",
            "--steps", "200", "--ckpt-every", "5", "--eval-every", "100", "--device", "cpu"]
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not killed.exists()
    step = read_meta(ckpt)["train_state"]["step"]
    assert 5 <= step < 200
    train(RunOptions(str(corpus), str(killed), "debug", resume=str(ckpt), device="cpu"))
    assert read_meta(killed)["training"]["steps"] == 200
    assert same_weights(whole, killed)


def test_ddp_gloo_two_processes_matches_one_process(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    single = tmp_path / "single" / "m.safetensors"
    train(RunOptions(str(corpus), str(single), "debug", {"steps": 8, "eval_every": 0, "ckpt_every": 0}, device="cpu"))
    ddp = tmp_path / "ddp" / "m.safetensors"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "v2m", "train", str(corpus), "-o", str(ddp), "--preset", "debug", "--steps", "8",
            "--eval-every", "0", "--ckpt-every", "0", "--device", "cpu"]
    run = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    a, b = WEIGHT_KEYS(load_file(str(single))), WEIGHT_KEYS(load_file(str(ddp)))
    # each rank takes half of the same global batch and DDP averages the gradients: the same update as one
    # process on the whole batch, up to float summation order
    assert read_meta(ddp)["training"]["processes"] == 2
    init = WEIGHT_KEYS(load_file(str(single)))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4)
    assert init.keys() == a.keys()


def test_bad_inputs_one_line_each(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    other = make_corpus(tmp_path / "other", name="another-tokenizer")
    out = tmp_path / "m.safetensors"
    train(RunOptions(str(corpus), str(out), "debug", {"steps": 10}))
    ckpt = out.with_name("m.ckpt.safetensors")
    with pytest.raises(V2MError, match="another tokenizer"):
        train(RunOptions(str(other), str(tmp_path / "x.safetensors"), "debug", resume=str(ckpt)))
    with pytest.raises(V2MError, match="another tokenizer"):
        train(RunOptions(str(other), str(tmp_path / "y.safetensors"), "debug", {"steps": 2}, init=str(out)))
    with pytest.raises(V2MError, match="no such file"):
        train(RunOptions(str(corpus), str(tmp_path / "z.safetensors"), "debug", resume=str(tmp_path / "gone.safetensors")))
    with pytest.raises(V2MError, match="not a resumable training checkpoint"):
        train(RunOptions(str(corpus), str(tmp_path / "w.safetensors"), "debug", resume=str(out)))
    with pytest.raises(V2MError, match="already exists"):
        train(RunOptions(str(corpus), str(out), "debug"))
    with pytest.raises(V2MError, match="checkpoint of an earlier run exists"):
        out.unlink()
        train(RunOptions(str(corpus), str(out), "debug"))
    with pytest.raises(V2MError, match="expected a v2m.corpus"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "index.json").write_text('{"format": "v2m.rhythm", "version": 1, "data": {}}')
        train(RunOptions(str(tmp_path / "bad"), str(tmp_path / "v.safetensors"), "debug"))
    np.testing.assert_array_equal(read_corpus(corpus).load("val").tokens, read_corpus(corpus).load("val").tokens)


def test_time_budget_stops_cleanly_and_writes_everything(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    out = tmp_path / "m.safetensors"
    summary = train(RunOptions(str(corpus), str(out), "debug", {"steps": 100000, "eval_every": 0}, max_minutes=0.03))
    assert 1 <= summary["steps"] < 100000 and summary["planned_steps"] == summary["steps"]
    assert read_meta(out)["training"]["steps"] == summary["steps"] and summary["val_nll"] is not None
    assert (tmp_path / "m.md").is_file() and (tmp_path / "m.train.json").is_file()


def test_short_val_split_and_fine_tuning(tmp_path):
    corpus = make_corpus(tmp_path / "c", pieces=(30, 1, 1))  # val/test: one piece of < 203 tokens, context 250
    out = tmp_path / "m.safetensors"
    summary = train(RunOptions(str(corpus), str(out), "debug", {"steps": 4, "context": 250, "batch": 2}))
    assert summary["val_nll"] > 0 and summary["test_nll"] > 0
    tuned = tmp_path / "tuned.safetensors"
    train(RunOptions(str(corpus), str(tuned), "debug", {"steps": 2, "context": 250, "batch": 2}, init=str(out)))
    assert read_meta(tuned)["config"] == read_meta(out)["config"]
