#!/usr/bin/env bash
# v2m set-up: installs what this machine lacks (idempotent), then does one job.
#   ./setup.sh demo   set up, then run v2m on the sample clip (out/ holds the results)
#   ./setup.sh test   set up, then run the test suite
#   ./setup.sh        set up only
# Settings (environment): V2M_VENV (default .venv), PYTHON (default python3.11), V2M_DEMO_OUT (default out),
#   V2M_TORCH_VERSION (default 2.13.0, the CPU build), V2M_TORCH_FROM_PYPI=1 (allow PyPI's torch: the CUDA build)
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
# torch: the CPU build from PyTorch's CPU index. A bare `pip install torch` gets PyPI's CUDA build (~3.4 GB with its
# nvidia-* packages, also on machines without a GPU), so the pin carries the +cpu label, which only CPU wheels have
# (the CPU index, or a local wheel in pip's find-links); PyPI's build is taken only when asked for.
TORCH=${V2M_TORCH_VERSION:-2.13.0}
CPU_INDEX=https://download.pytorch.org/whl/cpu
have_torch=$("$VPY" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
release() { local v=${1%%+*}; while [[ $v == *.0 ]]; do v=${v%.0}; done; echo "$v"; }  # 2.7.0+cpu → 2.7
if [ "$(release "$have_torch")" != "$(release "$TORCH")" ]; then
  pip_quiet --upgrade pip
  if [ "${V2M_TORCH_FROM_PYPI:-0}" = 1 ]; then
    say "installing torch==$TORCH from PyPI (V2M_TORCH_FROM_PYPI=1): the CUDA build, several GB with its nvidia-* packages"
    pip_quiet "torch==$TORCH"
  else
    # probe the index first: when it is unreachable pip would retry every page it needs for minutes
    if "$VPY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)' "$CPU_INDEX/torch/" 2>/dev/null; then
      say "installing torch==$TORCH (CPU build, from $CPU_INDEX)"
      index=(--index-url "$CPU_INDEX"); why="$CPU_INDEX has no such wheel"
    else
      say "$CPU_INDEX is unreachable: looking for a CPU wheel of torch $TORCH in pip's other sources (find-links, configured indexes)"
      index=(); why="$CPU_INDEX unreachable, and no local wheel"
    fi
    if ! "$VPY" -m pip install "${index[@]}" "torch==$TORCH+cpu" >>"$LOG" 2>&1; then  # not -q: the reason is needed
      # pip says it one of two ways, the second when a constraint (pip.conf) names torch too
      if grep -q "No matching distribution found for torch" "$LOG" \
        || grep -A5 "no matching distributions available" "$LOG" | grep -q -E '^[[:space:]]+torch[[:space:]]*$'; then
        say "no CPU build of torch $TORCH to install ($why); V2M_TORCH_FROM_PYPI=1 ./setup.sh installs PyPI's CUDA build instead (several GB)"
        exit 1
      fi
      say "pip install torch==$TORCH+cpu failed; the end of $LOG:"
      tail -n 25 "$LOG" >&2
      exit 1
    fi
  fi
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
    exec "$VENV/bin/v2m" run samples/clip.mp4 -o "${V2M_DEMO_OUT:-out}/" "${@:2}"
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
