# Source this on a machine where v2m can't be pip-installed (the GPU machine: no registry, its own torch):
#   . scripts/device_env.sh
# It installs carried pure-Python wheels (.whl/, if present) into /tmp/site and lays out the `v2m` package
# there with symlinks that follow pyproject.toml's package map (core/ → v2m, cli/ → v2m.cli, ...).
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_site=${V2M_SITE:-/tmp/site}
mkdir -p "$_site/v2m"
_whl=${V2M_WHEELS:-$_root/.whl}  # a folder of wheels (.whlrun: the same without music21 and the test tools)
if ls "$_whl"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$_site" "$_whl"/*.whl
fi
for _f in "$_root"/core/*; do case $_f in */__pycache__) ;; *) ln -sfn "$_f" "$_site/v2m/" ;; esac; done  # modules, schemas/, csrc/
for _pkg in cli stages models quant presets; do ln -sfn "$_root/$_pkg" "$_site/v2m/$_pkg"; done
export PYTHONPATH="$_site${PYTHONPATH:+:$PYTHONPATH}"
unset _root _site _f _pkg _whl
