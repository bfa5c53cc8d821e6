#!/usr/bin/env bash
# v2m set-up: installs what this machine lacks (idempotent), then does one job.
#   ./setup.sh demo   set up, then run v2m on the sample clip (out/ holds the results)
#   ./setup.sh test   set up, then run the test suite
#   ./setup.sh        set up only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD
VENV=${V2M_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

say() { printf '[setup] %s\n' "$*" >&2; }

# 1. system packages: ffmpeg (video/audio I/O), fluidsynth + a General MIDI soundfont (rendering)
missing=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || [ -f /usr/share/soundfonts/FluidR3_GM.sf2 ] || missing+=(fluid-soundfont-gm)
# optional: a C compiler builds the CPU decode kernels on first use (models/engines/native.py, quant/vnni.py);
# without one v2m falls back to PyTorch ops (slower) and says so in --debug logs
optional=()
command -v cc >/dev/null 2>&1 && [ -f /usr/include/math.h ] || optional+=(gcc libc6-dev)
if [ ${#missing[@]} -gt 0 ] || [ ${#optional[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${missing[*]} ${optional[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" "${optional[@]}" >/dev/null
  elif [ ${#missing[@]} -gt 0 ]; then
    say "missing Debian packages: ${missing[*]}"
    say "run as root, or: sudo apt-get install -y ${missing[*]} ${optional[*]}"
    exit 1
  else
    say "no C compiler: the fast CPU decode kernels stay off (sudo apt-get install -y ${optional[*]} to enable them)"
  fi
fi

# 2. the virtual environment, torch (CPU build, pinned), and v2m itself (editable)
"$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || { say "Python 3.11 or newer is needed (found $("$PY" --version 2>&1))"; exit 1; }
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
VPY=$VENV/bin/python
LOG=$VENV/setup-pip.log
: > "$LOG"
# pip and the build backend are chatty (deprecation notices, index warnings): their output goes to a log,
# shown only when a step fails
pip_quiet() {
  if ! "$VPY" -m pip install -q "$@" >>"$LOG" 2>&1; then
    say "pip install $* failed; the end of $LOG:"
    tail -n 25 "$LOG" >&2
    exit 1
  fi
}
if ! "$VPY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  say "installing torch==2.13.0 (CPU build)"
  pip_quiet --upgrade pip
  pip_quiet torch==2.13.0
fi
stamp=$VENV/.v2m-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VPY" -c 'import v2m' 2>/dev/null; then
  say "installing v2m and its dependencies"
  pip_quiet -e ".[test]"
  echo "$want" > "$stamp"
fi

case "${1:-}" in
  demo)
    # the sample clip is made, not shipped: 20 s of synthetic motion at 100 BPM with three hard cuts
    "$VENV/bin/v2m" sample samples/clip.mp4 --if-missing
    # a rerun resumes: finished outputs in out/ are kept (add --force to redo them)
    exec "$VENV/bin/v2m" run samples/clip.mp4 -o out/ "${@:2}"
    ;;
  test)
    # -n 2: the suite is sized for two cores. pytest exits 5 when no test ran: that is a failure here too.
    set +e
    "$VPY" -m pytest -q -n "${V2M_TEST_JOBS:-2}" tests "${@:2}"
    rc=$?
    set -e
    [ $rc -eq 5 ] && { say "no tests ran"; exit 1; }
    exit $rc
    ;;
  "") say "ready: $VENV/bin/v2m --help" ;;
  *) say "unknown job '$1' (use: demo | test)"; exit 2 ;;
esac
