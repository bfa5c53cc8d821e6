#!/usr/bin/env bash
# Retrain the diffusion model (presets/diffusion.*) from scratch: build the roll set, then train.
#
#   scripts/train_diffusion.sh                     # roll set (if missing) + training on this machine's GPU, else CPU
#   ROLLS=.carry/rolls.safetensors OUT=$OUT MINUTES=5 JOBS=15 scripts/train_diffusion.sh
#                                                  # the GPU machine: carry .whl (music21, MidiTok, symusic wheels for
#                                                  # its Python) and the roll set is built there on its many cores
#   scripts/train_diffusion.sh rolls               # roll set only
#
# The roll set (stages/tokens/rolls.py) holds the multi-part pieces of music21's corpus (chorales, motets,
# madrigals, quartets) as notes by role on their beat grid with their controls, ~5 MB. Then ship:
#   cp $OUT/diffusion.safetensors $OUT/diffusion.md presets/     (bf16 weights; the tokenizer is in the metadata)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROLLS=${ROLLS:-.carry/rolls.safetensors}
OUT=${OUT:-out/diffusion}
MINUTES=${MINUTES:-5}
DEVICE=${DEVICE:-auto}
JOBS=${JOBS:-2}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
what=${1:-all}
if ! "$PY" -c 'import v2m.models.diffusion_train' 2>/dev/null; then
  # shellcheck source=device_env.sh
  . scripts/device_env.sh
fi

if [ "$what" = all ] || [ "$what" = rolls ]; then
  if [ ! -f "$ROLLS" ]; then
    echo "[train_diffusion] building the roll set $ROLLS" >&2
    mkdir -p "$(dirname "$ROLLS")"
    "$PY" -m v2m encode-tokens --source music21 --rolls -o "$ROLLS" --jobs "$JOBS"
  else
    echo "[train_diffusion] roll set $ROLLS exists; delete it to rebuild" >&2
  fi
fi

if [ "$what" = all ] || [ "$what" = train ]; then
  mkdir -p "$OUT"
  PYTHONUNBUFFERED=1 "$PY" -m v2m train "$ROLLS" --backend diffusion -o "$OUT/diffusion.safetensors" \
    --preset diffusion --device "$DEVICE" --max-minutes "$MINUTES" --save-dtype bfloat16 --force
fi
