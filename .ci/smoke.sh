#!/usr/bin/env bash
# Smoke test of a fresh install: a new venv made by ./setup.sh for the given Python, then what a new user runs first.
#   .ci/smoke.sh PYTHON [--tests]      e.g. .ci/smoke.sh python3.12
# setup.sh's settings pass through (V2M_TORCH_FROM_PYPI, V2M_TORCH_VERSION, PIP_CONSTRAINT, ...): .ci/lowest.sh uses
# them to install the lowest versions pyproject.toml allows. --tests also runs the test suite in that venv.
# The venv and pip's cache for it live in a temporary folder that is deleted afterwards (a CUDA torch is ~5 GB).
set -euo pipefail
PY=${1:?usage: .ci/smoke.sh PYTHON [--tests]}
TESTS=${2:-}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '[smoke %s] %s\n' "$(basename "$PY")" "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/v2m-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export V2M_VENV=$WORK/venv PYTHON=$PY PIP_CACHE_DIR=$WORK/pip-cache V2M_DEMO_OUT=$WORK/out
V=$V2M_VENV/bin

# 1. the README's demo: set-up, the sample clip, `v2m run` on it (video, WAV, MIDI, rhythm, tokens, report)
./setup.sh demo
for f in clip.mp4 clip.wav clip.mid clip.report.json clip.done.json; do
  [ -s "$WORK/out/$f" ] || { say "v2m run wrote no $f"; exit 1; }
done
"$V/v2m" --help >/dev/null

# 2. the stages one at a time through pipes, as the README's one-liner
( set -o pipefail
  "$V/v2m" extract-rhythm samples/clip.mp4 | "$V/v2m" encode-tokens - | "$V/v2m" generate - --seed 1 \
    | "$V/v2m" decode - -o "$WORK/pipe.mid" )

# 3. on a terminal (progress bars are drawn only there): run again from scratch, then score the folder with a gate
if command -v script >/dev/null 2>&1; then
  script -qec "'$V/v2m' run samples/clip.mp4 -o '$WORK/tty' && '$V/v2m' evaluate '$WORK/tty' --fail-if 'beat_f1<0.5'" \
    /dev/null > "$WORK/tty.log" 2>&1 || { say "v2m on a terminal failed:"; tail -n 20 "$WORK/tty.log" >&2; exit 1; }
else
  say "no 'script' command (util-linux): the terminal run is skipped"
fi

# what was tested: the interpreter, torch's build, and every direct dependency's version
"$V/python" - <<'EOF' >&2
import importlib.metadata as md, re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]
names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in deps["dependencies"] + deps["optional-dependencies"]["test"]]
print(f"[smoke] python {sys.version.split()[0]}: " + " ".join(f"{n}=={md.version(n)}" for n in names))
EOF

if [ "$TESTS" = --tests ]; then
  ./setup.sh test
fi
say "ok"
