#!/usr/bin/env bash
# The lowest versions pyproject.toml allows, tested: every direct dependency (and the test extra) is pinned to its
# `>=` bound through pip constraints (what they pull in resolves as usual: uv's "lowest-direct"), then
# .ci/smoke.sh installs with them on Python 3.11 and runs the demo, the pipes and the test suite.
#   .ci/lowest.sh            (CI runs it; ~10 min, most of it the test suite and torch's download)
# torch's lowest version exists on PyPI only as the CUDA build for Python 3.11 (download.pytorch.org's CPU wheels are
# not reachable from CI), so this check takes PyPI's build (V2M_TORCH_FROM_PYPI=1; it runs on the CPU, ~2.7 GB).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3.11}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/v2m-lowest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$PY" - > "$WORK/lowest.txt" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.a-z]*)(\s*,.*)?", requirement)
    if not m:
        sys.exit(f"lowest.sh: {requirement!r} in pyproject.toml has no '>=' lower bound to test")
    print(f"{m.group(1)}=={m.group(2)}")
EOF
printf '[lowest] %s\n' "$(tr '\n' ' ' < "$WORK/lowest.txt")" >&2
torch_min=$(sed -n 's/^torch==//p' "$WORK/lowest.txt")

# PIP_CONSTRAINT replaces pip.conf's constraint for these installs; setup.sh installs torch at the pinned minimum
PIP_CONSTRAINT=$WORK/lowest.txt V2M_TORCH_VERSION=$torch_min V2M_TORCH_FROM_PYPI=${V2M_TORCH_FROM_PYPI:-1} \
  .ci/smoke.sh "$PY" --tests
