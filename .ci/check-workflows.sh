#!/usr/bin/env bash
# Validates every GitHub workflow in .github/workflows against GitHub's workflow JSON schema,
# offline: PyPI's check-jsonschema bundles the schema. Installs it into a cached virtual
# environment on first use.
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
