#!/usr/bin/env bash
# Quantize a model several ways, evaluate each against the float model with CI gates, print one table.
#
#   examples/quantize_and_eval.sh MODEL.safetensors CORPUS/ [OUT_DIR]
#
# Exits 0 when every gate holds, 3 when some quality gate failed, 1 when a step errored.
# Knobs (environment):
#   V2M=v2m            the v2m command
#   GROUP=64           group size of the weight-only schemes (must divide the model's widths: the default
#                      model's 320/832 take 64, debug models 32)
#   CALIB_SAMPLES=32   calibration windows (train split) for gptq / smoothquant
#   MAX_TOKENS=32768   test-split tokens scored for NLL and KL
#   SPEED=--speed      --no-speed skips the tokens/s measurement (faster CI)
#   KERNEL=auto        kernel for the quantized models
#   GATE_SCALE=1       multiplies every NLL gate below (-100 makes every gate fail: a test of the failure path)
#   ROWS="..."         which rows to run (names from the table below), default all
#   DIFFUSION=, CONTROLS=  a diffusion checkpoint and v2m.controls (file or folder): adds its W8A8/W4A8 rows
set -uo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
MODEL=$1
CORPUS=$2
OUT=${3:-quantized}
V2M=${V2M:-v2m}
GROUP=${GROUP:-64}
CALIB_SAMPLES=${CALIB_SAMPLES:-32}
MAX_TOKENS=${MAX_TOKENS:-32768}
SPEED=${SPEED:---speed}
KERNEL=${KERNEL:-auto}
GATE_SCALE=${GATE_SCALE:-1}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"

# name | quantize arguments | largest allowed relative NLL increase (nll_delta, 0.01 = 1 %)
CONFIGS=(
  "w8a8-smoothquant|--scheme w8a8 --method smoothquant --alpha 0.5|0.01"
  "w8-rtn|--scheme w8 --method rtn|0.01"
  "w4-rtn|--scheme w4 --group $GROUP --method rtn|0.05"
  "w4-gptq|--scheme w4 --group $GROUP --method gptq|0.03"
  "nvfp4-gptq|--scheme nvfp4 --method gptq|0.05"
  "w3-rotate+gptq|--scheme w3 --group $GROUP --asym --method rotate+gptq|0.15"
)
ROWS=${ROWS:-$(printf '%s\n' "${CONFIGS[@]}" | cut -d'|' -f1 | tr '\n' ' ')}

status=0
reports=()

# evaluate's exit code $1 for row $2 into the status: 3 (a gate failed) is kept unless a step already errored;
# any other failure is an error (returns 1: skip the row)
gated() {
  if [ "$1" -eq 3 ]; then
    [ "$status" -eq 0 ] && status=3
  elif [ "$1" -ne 0 ]; then
    echo "evaluate failed: $2 (exit $1)" >&2
    status=1
    return 1
  fi
  return 0
}
for config in "${CONFIGS[@]}"; do
  IFS='|' read -r name args gate <<<"$config"
  case " $ROWS " in *" $name "*) ;; *) continue ;; esac
  qmodel="$OUT/$name.safetensors"
  report="$OUT/$name.report.json"
  echo "== $name" >&2
  # shellcheck disable=SC2086  # $args is a list of options by design
  if ! "$V2M" quantize "$MODEL" -o "$qmodel" $args --calib "$CORPUS" --calib-samples "$CALIB_SAMPLES" --force; then
    echo "quantize failed: $name" >&2
    status=1
    continue
  fi
  limit=$("$PYTHON" -c "print($gate * $GATE_SCALE)")
  "$V2M" evaluate --model "$qmodel" --reference "$MODEL" --corpus "$CORPUS" --split test --kernel "$KERNEL" \
    --max-tokens "$MAX_TOKENS" "$SPEED" --json --fail-if "nll_delta>$limit" -o "$report" --force >/dev/null
  gated $? "$name" || continue
  reports+=("$name=$report")
done

# the diffusion backend (issue 21), when DIFFUSION=model.safetensors and CONTROLS=controls.json|folder/ are set:
# timestep-aware W8A8 and W4A8 against the float model from the same seeds, gated on v-prediction error and note F1
dreports=()
if [ -n "${DIFFUSION:-}" ] && [ -n "${CONTROLS:-}" ]; then
  for config in "w8a8|0.01|0.9" "w4a8|0.05|0.8"; do
    IFS='|' read -r scheme verr f1 <<<"$config"
    name="diffusion-$scheme-timestep"
    echo "== $name" >&2
    if ! "$V2M" quantize "$DIFFUSION" -o "$OUT/$name.safetensors" --scheme "$scheme" --calib "$CONTROLS" --force; then
      echo "quantize failed: $name" >&2
      status=1
      continue
    fi
    limit=$("$PYTHON" -c "print($verr * $GATE_SCALE)")
    "$V2M" evaluate --model "$OUT/$name.safetensors" --reference "$DIFFUSION" --corpus "$CONTROLS" --kernel "$KERNEL" \
      "$SPEED" --json --fail-if "v_err>$limit,note_f1<$f1" -o "$OUT/$name.report.json" --force >/dev/null
    gated $? "$name" || continue
    dreports+=("$name=$OUT/$name.report.json")
  done
fi

# one table (stdout): everything measured against the float model on the same test split
"$PYTHON" - "${reports[@]}" <<'EOF'
import json, sys

rows = [arg.split("=", 1) for arg in sys.argv[1:]]
print("| scheme / method | size ratio (vs float file) | NLL Δ % | KL vs float | decode tok/s ratio | gate |")
print("|---|---|---|---|---|---|")
for name, path in rows:
    data = json.load(open(path))
    m = data["metrics"]
    gates = data.get("gates") or []
    failed = [g["gate"] for g in gates if g["failed"]]
    speed = f"{m['decode_speedup']:.2f}×" if "decode_speedup" in m else "—"
    print(f"| {name} | {m['size_ratio']:.3f} | {100 * m['nll_delta']:+.2f} | {m['kl']:.4f} | {speed} | "
          f"{'FAIL ' + ', '.join(failed) if failed else 'pass'} |")
EOF
if [ ${#dreports[@]} -gt 0 ]; then
  "$PYTHON" - "${dreports[@]}" <<'EOF'
import json, sys

print("| diffusion scheme | size ratio | v error per step | note F1 vs float | onset F | step time ratio | gate |")
print("|---|---|---|---|---|---|---|")
for name, path in (arg.split("=", 1) for arg in sys.argv[1:]):
    data = json.load(open(path))
    m = data["metrics"]
    failed = [g["gate"] for g in data.get("gates") or [] if g["failed"]]
    speed = f"{m['sample_speedup']:.2f}×" if "sample_speedup" in m else "—"
    print(f"| {name} | {m['size_ratio']:.3f} | {m['v_err']:.4f} | {m['note_f1']:.3f} | "
          f"{m.get('onset_f1', float('nan')):.3f} | {speed} | {'FAIL ' + ', '.join(failed) if failed else 'pass'} |")
EOF
fi
exit "$status"
