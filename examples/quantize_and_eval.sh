#!/usr/bin/env bash
# Quantize a model several ways and gate each against the float model: a thin call of `v2m sweep`.
#
#   examples/quantize_and_eval.sh MODEL.safetensors CORPUS/ [OUT_DIR] [-- more v2m sweep options]
#
# The rows and their gates are data: examples/sweep.toml (copy and edit it, or SWEEP=your.toml). The Markdown
# table goes to stdout (append it to "$GITHUB_STEP_SUMMARY" in CI); OUT_DIR also gets report.json, summary.md,
# junit.xml and one checkpoint per row. Exits 0 when every gate holds, 3 when a gate failed, 1 when a row errored.
#   V2M=v2m   SWEEP=examples/sweep.toml
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
exit "$status"
