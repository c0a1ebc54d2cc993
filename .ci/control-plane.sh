#!/usr/bin/env bash
# Provisions the binaries of a real Kubernetes control plane for appenv's tests and `appenv dev`.
#
#   bash .ci/control-plane.sh          # install prerequisites, build/cache, print the bin dir
#
# If APPENV_K8S_BIN_DIR names a directory that already holds kube-apiserver,
# kube-controller-manager and etcd (e.g. official release binaries downloaded by the GitHub
# workflow), nothing is built: that directory is used as it is.
#
# Otherwise kube-apiserver and kube-controller-manager 1.20.2 are built from Debian bookworm's
# `kubernetes` source package (the recipe in shared/TEST-CLUSTER.md) and cached under
# ${APPENV_CACHE_DIR:-$HOME/.cache/appenv}/kubernetes/<build id>/bin, so a machine builds them once;
# etcd comes from Debian's etcd-server package and is linked into the same directory.
# The last line printed on stdout is the bin directory; progress goes to stderr.
set -euo pipefail

K8S_DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_VERSION="1.20.2"
# The cache key names the patches applied below: change it when they change, so every machine
# rebuilds once instead of keeping a binary without them.
BUILD_ID="$K8S_VERSION-appenv1"
say() { printf '[control-plane] %s\n' "$*" >&2; }

have_all() {
  local dir=$1
  [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kube-controller-manager" ] && [ -x "$dir/etcd" ]
}

if [ -n "${APPENV_K8S_BIN_DIR:-}" ]; then
  if have_all "$APPENV_K8S_BIN_DIR"; then
    say "using ready binaries from APPENV_K8S_BIN_DIR=$APPENV_K8S_BIN_DIR"
    echo "$APPENV_K8S_BIN_DIR"
    exit 0
  fi
  say "APPENV_K8S_BIN_DIR=$APPENV_K8S_BIN_DIR lacks kube-apiserver, kube-controller-manager or etcd"
  exit 1
fi

cache="${APPENV_CACHE_DIR:-$HOME/.cache/appenv}/kubernetes/$BUILD_ID"
bin="$cache/bin"
if have_all "$bin"; then
  say "cached binaries for Kubernetes $K8S_VERSION in $bin"
  echo "$bin"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# 1. Source packages: a deb-src entry with the same URIs and keys as the machine's own sources.
src_list=/etc/apt/sources.list.d/appenv-bookworm-src.sources
if [ ! -f "$src_list" ]; then
  main_sources=/etc/apt/sources.list.d/debian.sources
  [ -f "$main_sources" ] || { say "no $main_sources to copy the mirror from"; exit 1; }
  say "enabling bookworm source packages ($src_list)"
  # Keep the URIs and Signed-By of every stanza, switch Types to deb-src.
  $SUDO sh -c "sed -e 's/^Types:.*/Types: deb-src/' '$main_sources' > '$src_list'"
fi
say "apt-get update"
$SUDO apt-get update -qq >&2
say "installing golang-go etcd-server rsync openssl make golang-github-modern-go-reflect2-dev"
$SUDO apt-get install -y -qq golang-go etcd-server rsync openssl make \
  golang-github-modern-go-reflect2-dev >&2

mkdir -p "$bin"
ln -sf "$(command -v etcd || echo /usr/bin/etcd)" "$bin/etcd"

if [ ! -x "$bin/kube-apiserver" ] || [ ! -x "$bin/kube-controller-manager" ]; then
  work="$cache/src"
  rm -rf "$work"
  mkdir -p "$work"
  cd "$work"
  say "downloading the kubernetes source package $K8S_DEB_VERSION"
  apt-get source --download-only "kubernetes=$K8S_DEB_VERSION" >&2
  say "unpacking"
  tar xzf kubernetes_*.orig.tar.gz
  cd kubernetes-$K8S_VERSION
  # Kubernetes 1.20 vendors modern-go/reflect2 v1.0.1, whose unsafe map iteration crashes
  # programs built with Go >= 1.18 (kube-apiserver dies with "fatal error: fault" in
  # UnsafeMapType.UnsafeIterate when it encodes a custom resource). Debian's Go is 1.19, so
  # use Debian's reflect2 1.0.2, the release that fixed it; its API is unchanged.
  fixed=/usr/share/gocode/src/github.com/modern-go/reflect2
  vendored=vendor/github.com/modern-go/reflect2
  [ -d "$fixed" ] || { say "missing $fixed (package golang-github-modern-go-reflect2-dev)"; exit 1; }
  say "patching $vendored with reflect2 from $fixed"
  rm -f "$vendored"/*.go
  find "$fixed" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$vendored"/ \;
  mkdir -p .go/src/k8s.io
  ln -sfn ../../.. .go/src/k8s.io/kubernetes
  rm -rf _output
  say "building kube-apiserver and kube-controller-manager (about 5 minutes on 2 cores)"
  start=$(date +%s)
  # Print a heartbeat so a long build is visibly alive.
  ( while sleep 30; do say "  still building... $(( $(date +%s) - start ))s"; done ) &
  beat=$!
  trap 'kill $beat 2>/dev/null || true' EXIT
  GOPATH=$PWD/.go CGO_ENABLED=0 GOFLAGS=-mod=vendor \
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1 || {
      say "build failed; last lines of $work/build.log:"; tail -30 "$work/build.log" >&2; exit 1; }
  kill $beat 2>/dev/null || true
  install -m 0755 _output/bin/kube-apiserver _output/bin/kube-controller-manager "$bin/"
  say "built in $(( $(date +%s) - start ))s"
  cd "$cache"
  rm -rf "$work"
fi

have_all "$bin" || { say "binaries missing in $bin"; exit 1; }
say "control-plane binaries ready in $bin"
echo "$bin"
