#!/usr/bin/env bash
# The layering of the crates under operator/ (README: "How it is built"), checked from Cargo's
# own view of the workspace:
# - every crate lives under operator/;
# - appenv-core's normal dependencies hold neither tokio nor kube's client or runtime;
# - the binary as operator/Dockerfile builds it (--no-default-features) holds neither the local
#   control plane (appenv-localcluster, rcgen, tempfile, libc's users) nor the benchmark;
# - the API, core, controller, backup and activator crates forbid unsafe code.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "[architecture] $*" >&2; exit 1; }

echo "[architecture] crates (cargo metadata --no-deps):"
cargo metadata --no-deps --format-version 1 --locked \
  | python3 -c '
import json, os, sys
root = os.getcwd()
for p in json.load(sys.stdin)["packages"]:
    where = os.path.relpath(os.path.dirname(p["manifest_path"]), root)
    name = p["name"]
    print(f"  {name:22} {where}")
    if not where.startswith("operator/"):
        sys.exit(f"[architecture] {name} is not under operator/")
'

core_deps=$(cargo tree --locked -p appenv-core -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
for banned in tokio kube-client kube-runtime hyper; do
  if grep -qx "$banned" <<<"$core_deps"; then
    fail "appenv-core depends on $banned (it must stay pure: no client, no runtime, no I/O)"
  fi
done
echo "[architecture] appenv-core: no tokio, kube-client, kube-runtime or hyper among $(wc -l <<<"$core_deps") dependencies"

image_deps=$(cargo tree --locked -p appenv --no-default-features -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
for banned in appenv-localcluster appenv-bench rcgen tempfile; do
  if grep -qx "$banned" <<<"$image_deps"; then
    fail "the image's binary (-p appenv --no-default-features) depends on $banned"
  fi
done
echo "[architecture] the image's binary: no appenv-localcluster, appenv-bench, rcgen or tempfile among $(wc -l <<<"$image_deps") dependencies"

for crate in api core controller backup activator; do
  grep -qx '#!\[forbid(unsafe_code)\]' "operator/$crate/src/lib.rs" \
    || fail "operator/$crate/src/lib.rs lacks #![forbid(unsafe_code)]"
done
echo "[architecture] #![forbid(unsafe_code)] in appenv-api, appenv-core, appenv-controller, appenv-backup, appenv-activator"
