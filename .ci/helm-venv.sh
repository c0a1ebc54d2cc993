#!/usr/bin/env bash
# Provisions Helm v4 for appenv's chart tests: a Python virtual environment holding the PyPI
# wheel helm-sdkpy (the Helm v4 library as a shared object with Python bindings), driven by
# .ci/helm.py. There is no helm binary in Debian, and helm-sdkpy needs no download from Helm.
#
#   PY="$(bash .ci/helm-venv.sh)"        # create once (cached), print the venv's python
#   "$PY" .ci/helm.py lint charts/appenv-operator
#
# The venv is cached in ${APPENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/appenv}/venv-helm-sdkpy-<version>,
# so a machine builds it once; later runs only check that the import works. The only line on
# stdout is the path of the venv's python; progress goes to stderr.
#
# helm-sdkpy declares Python >= 3.12 but works on 3.11 (Debian bookworm's and these machines'):
# the wheel is downloaded as if for 3.12 and installed with --ignore-requires-python.
set -euo pipefail

HELM_SDKPY_VERSION="0.1.32"
say() { printf '[helm-venv] %s\n' "$*" >&2; }

cache="${APPENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/appenv}"
venv="$cache/venv-helm-sdkpy-$HELM_SDKPY_VERSION"
python="$venv/bin/python"
# Written last: a venv without it is a half-finished one (an interrupted first run).
complete="$venv/.appenv-complete"

works() {
  [ -f "$complete" ] && [ -x "$python" ] &&
    "$python" -c 'import helm_sdkpy; helm_sdkpy.get_version()' >/dev/null 2>&1
}

if works; then
  say "cached helm-sdkpy $HELM_SDKPY_VERSION in $venv"
  echo "$python"
  exit 0
fi

mkdir -p "$cache"
# Two runs at once (parallel test binaries, two terminals) build it once.
exec 9>"$venv.lock"
flock 9
if works; then
  say "helm-sdkpy $HELM_SDKPY_VERSION was just installed in $venv by another run"
  echo "$python"
  exit 0
fi

base_python="${APPENV_PYTHON:-python3}"
command -v "$base_python" >/dev/null || { say "$base_python not found (apt-get install python3 python3-venv)"; exit 1; }
say "creating $venv with $("$base_python" --version 2>&1)"
rm -rf "$venv"
"$base_python" -m venv "$venv" >&2 || {
  say "python3 -m venv failed (on Debian: apt-get install python3-venv)"; rm -rf "$venv"; exit 1; }

wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
say "downloading the helm-sdkpy $HELM_SDKPY_VERSION wheel"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: --python-version 3.12 --dest "$wheels" "helm-sdkpy==$HELM_SDKPY_VERSION" >&2
shopt -s nullglob
wheel=("$wheels"/helm_sdkpy-"$HELM_SDKPY_VERSION"-*.whl)
[ "${#wheel[@]}" -eq 1 ] || { say "expected one helm-sdkpy wheel in $wheels, found: ${wheel[*]:-none}"; exit 1; }
say "installing $(basename "${wheel[0]}") and cffi"
"$python" -m pip install --quiet --disable-pip-version-check --ignore-requires-python \
  "${wheel[0]}" cffi >&2

"$python" -c 'import helm_sdkpy; print("[helm-venv] import ok:", helm_sdkpy.get_version())' >&2 || {
  say "helm_sdkpy does not import in $venv"; exit 1; }
touch "$complete"
say "helm-sdkpy $HELM_SDKPY_VERSION ready in $venv"
echo "$python"
