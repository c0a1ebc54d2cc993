#!/usr/bin/env bash
# Validates every GitHub workflow in .github/workflows against GitHub's workflow JSON schema and
# every action in .github/actions against GitHub's action schema (SchemaStore's, bundled by
# PyPI's check-jsonschema: offline), then checks the actions further with .ci/check-action.py
# (references, bash and JavaScript syntax, the scripts run with a stub appenv). Installs
# check-jsonschema into a cached virtual environment on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${APPENV_CACHE_DIR:-$HOME/.cache/appenv}/venv-check-jsonschema"
if [ ! -x "$venv/bin/check-jsonschema" ]; then
  echo "[check-workflows] installing check-jsonschema into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check check-jsonschema >&2
fi
shopt -s nullglob
files=(.github/workflows/*.yml .github/workflows/*.yaml)
[ "${#files[@]}" -gt 0 ] || { echo "[check-workflows] no workflow files" >&2; exit 1; }
echo "[check-workflows] validating ${files[*]} against the bundled schema vendor.github-workflows" >&2
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${files[@]}"

actions=(.github/actions/*/action.yml .github/actions/*/action.yaml)
[ "${#actions[@]}" -gt 0 ] || { echo "[check-workflows] no actions in .github/actions" >&2; exit 1; }
echo "[check-workflows] validating ${actions[*]} against the bundled schema vendor.github-actions" >&2
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-actions "${actions[@]}"
# check-jsonschema depends on ruamel.yaml, which check-action.py reads the actions with.
"$venv/bin/python" .ci/check-action.py "${actions[@]}"
