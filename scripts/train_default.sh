#!/usr/bin/env bash
# Retrain the default model (presets/default.*) from scratch: build the corpus, then train.
#
#   scripts/train_default.sh                      # corpus (if missing) + training on this machine's GPU, else CPU
#   CORPUS=.carry/corpus OUT=$OUT CKPT=/tmp/default.ckpt.safetensors MINUTES=7 scripts/train_default.sh train
#                                                 # training only (the GPU machine; the resumable checkpoint, ~120 MB,
#                                                 # kept out of $OUT so that only the ~15 MB model, log and card return)
#   scripts/train_default.sh corpus               # corpus only (needs MidiTok: run it on the CPU machine)
#
# The GPU machine has its own torch and no MidiTok and no pip registry: there the v2m package is laid out by
# scripts/device_env.sh and only the training step runs (torch + numpy + safetensors, and typer + rich for the CLI).
# Then ship:  cp $OUT/default.safetensors $OUT/default.md presets/   (bf16 weights, ≤ 25 MB; the tokenizer
# is inside the checkpoint's metadata).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CORPUS=${CORPUS:-.carry/corpus}
OUT=${OUT:-out/default}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-auto}
CKPT=${CKPT:-$OUT/default.ckpt.safetensors}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
what=${1:-all}

if [ "$what" = all ] || [ "$what" = corpus ]; then
  if [ ! -f "$CORPUS/index.json" ]; then
    echo "[train_default] building the corpus in $CORPUS" >&2
    "$PY" -m v2m encode-tokens --source music21 -o "$CORPUS/"
  else
    echo "[train_default] corpus $CORPUS exists; delete it to rebuild" >&2
  fi
fi

if [ "$what" = all ] || [ "$what" = train ]; then
  if ! "$PY" -c 'import v2m.models.train' 2>/dev/null; then
    # shellcheck source=device_env.sh
    . scripts/device_env.sh
  fi
  mkdir -p "$OUT"
  PYTHONUNBUFFERED=1 "$PY" -m v2m train "$CORPUS" -o "$OUT/default.safetensors" --preset small \
    --device "$DEVICE" --max-minutes "$MINUTES" --save-dtype bfloat16 --checkpoint "$CKPT" --force
fi
