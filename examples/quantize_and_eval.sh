#!/usr/bin/env bash
# Quantize a model several ways and gate each against the float model: a thin call of `v2m sweep`.
#
#   examples/quantize_and_eval.sh MODEL.safetensors CORPUS/ [OUT_DIR] [-- more v2m sweep options]
#
# The rows and their gates are data: examples/sweep.toml (copy and edit it, or SWEEP=your.toml). The Markdown
# table goes to stdout (append it to "$GITHUB_STEP_SUMMARY" in CI); OUT_DIR also gets report.json, summary.md,
# junit.xml and one checkpoint per row. Exits 0 when every gate holds, 3 when a gate failed, 1 when a row errored.
#   V2M=v2m   SWEEP=examples/sweep.toml
# The diffusion backend (issue 21), when DIFFUSION=model.safetensors and CONTROLS=controls.json|folder/ are set:
# timestep-aware W8A8, W4A8 and W4A8 + LoRA fine-tune (--method qalora) rows against the float diffusion model
# from the same seeds, gated on the v-prediction error and note F1 (the shipped model, calibrated on 4 other
# controls and scored on 8 synthetic videos: v_err 0.0027 / 0.0037, note F1 0.989 / 0.984 at W8A8 / W4A8;
# GATE_SCALE=-100 makes those gates fail: a test of the failure path).
set -uo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
MODEL=$1
CORPUS=$2
OUT=${3:-quantized}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
V2M=${V2M:-v2m}
SWEEP=${SWEEP:-$(dirname "${BASH_SOURCE[0]}")/sweep.toml}

"$V2M" sweep "$SWEEP" --model "$MODEL" --corpus "$CORPUS" -o "$OUT" --junit "$OUT/junit.xml" --force "$@"
status=$?
[ -f "$OUT/summary.md" ] && cat "$OUT/summary.md"

if [ -n "${DIFFUSION:-}" ] && [ -n "${CONTROLS:-}" ]; then
  GATE_SCALE=${GATE_SCALE:-1}
  echo "| diffusion row | gate | result |"
  echo "|---|---|---|"
  for config in "w8a8|rtn|0.005|0.95" "w4a8|rtn|0.01|0.9" "w4a8|qalora|0.01|0.9"; do
    IFS='|' read -r scheme method verr f1 <<<"$config"
    name="diffusion-$scheme-$method-timestep"
    if ! "$V2M" quantize "$DIFFUSION" -o "$OUT/$name.safetensors" --scheme "$scheme" --method "$method" \
        --calib "$CONTROLS" --force; then
      echo "quantize failed: $name" >&2
      status=1
      continue
    fi
    limit=$(awk -v a="$verr" -v b="$GATE_SCALE" 'BEGIN { print a * b }')
    gate="v_err>$limit,note_f1<$f1"
    "$V2M" evaluate --model "$OUT/$name.safetensors" --reference "$DIFFUSION" --corpus "$CONTROLS" --json \
      --fail-if "$gate" -o "$OUT/$name.report.json" --force >/dev/null
    code=$?
    if [ "$code" -eq 3 ]; then
      echo "| $name | $gate | FAIL |"
      [ "$status" -eq 0 ] && status=3
    elif [ "$code" -ne 0 ]; then
      echo "evaluate failed: $name (exit $code)" >&2
      status=1
    else
      echo "| $name | $gate | pass |"
    fi
  done
fi
exit "$status"
