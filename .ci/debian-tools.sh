#!/usr/bin/env bash
# Installs, from the machine's Debian packages, the commands the checks run that a fresh machine
# lacks: lua5.1 (the Argo CD health check's tests, operator/appenv/tests/argocd_health.rs),
# promtool (from `prometheus`, for .ci/check-monitoring.sh) and wrk (the load of `appenv bench
# wake`). A command already on PATH is kept.
set -euo pipefail
say() { echo "[debian-tools] $*" >&2; }

# command -> Debian package
declare -A package_of=([lua5.1]=lua5.1 [promtool]=prometheus [wrk]=wrk)
missing=()
for command in "${!package_of[@]}"; do
  command -v "$command" >/dev/null || missing+=("${package_of[$command]}")
done
if [ "${#missing[@]}" -eq 0 ]; then
  say "lua5.1, promtool and wrk are installed"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
say "apt-get update"
$SUDO apt-get update -qq >&2
# Without recommends: `prometheus` brings the server, which Debian's policy-rc.d keeps from
# starting in a container; only its promtool is used.
say "installing ${missing[*]}"
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
for command in "${!package_of[@]}"; do
  command -v "$command" >/dev/null || { say "$command is still missing"; exit 1; }
done
