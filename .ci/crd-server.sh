#!/usr/bin/env bash
# Provisions a current Kubernetes CRD server for appenv's tests: k8s.io/apiextensions-apiserver
# (the part of kube-apiserver that serves CustomResourceDefinitions and custom resources), built
# from Debian unstable's Go source packages (the recipe in shared/CURRENT-CRD-SERVER.md).
#
#   APPENV_CRD_SERVER_BIN="$(bash .ci/crd-server.sh)"    # build once (cached), print the binary
#
# If APPENV_CRD_SERVER_BIN already names an executable, nothing is built: it is used as it is.
#
# Otherwise, with nothing installed into the system: a private apt view of Debian sid (same
# mirror and keyring as the machine's debian.sources, read at run time) resolves
# golang-k8s-apiextensions-apiserver-dev, every golang-*-dev package it needs and sid's default
# Go toolchain; they are downloaded, unpacked with `dpkg -x` into a private root, and our own
# `main` (operator/localcluster/crd-server/main.go: the upstream server plus /apis discovery
# and OpenAPI, which kubectl needs) is built from it in GOPATH mode, stamped with the matching
# Kubernetes version (apiextensions-apiserver 0.X.Y is Kubernetes 1.X.Y).
#
# The binary is cached in ${APPENV_CACHE_DIR:-$HOME/.cache/appenv}/crd-server/<apiextensions
# version>-<hash of main.go>/bin/appenv-crd-server, so a machine builds it once (about 5 minutes
# on 2 cores, 40 s of it download and unpack; about 4 GB of disk in that folder while building,
# the 106 MB binary alone afterwards: the sources and Go's build cache and temporary files are
# deleted once it is built; a failed or interrupted build resumes from them).
# A changed main.go builds again. APPENV_GO_BUILD_JOBS (default 2) is `go build -p`.
# The only line on stdout is the binary's path; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

API_PACKAGE="golang-k8s-apiextensions-apiserver-dev"
BINARY="appenv-crd-server"
say() { printf '[crd-server] %s\n' "$*" >&2; }

if [ -n "${APPENV_CRD_SERVER_BIN:-}" ]; then
  if [ -x "$APPENV_CRD_SERVER_BIN" ]; then
    say "using the ready binary APPENV_CRD_SERVER_BIN=$APPENV_CRD_SERVER_BIN"
    echo "$APPENV_CRD_SERVER_BIN"
    exit 0
  fi
  say "APPENV_CRD_SERVER_BIN=$APPENV_CRD_SERVER_BIN is not an executable"
  exit 1
fi

main_dir="$PWD/operator/localcluster/crd-server"
main_hash="$(cat "$main_dir"/*.go | sha256sum | cut -c1-12)"
base="${APPENV_CACHE_DIR:-$HOME/.cache/appenv}/crd-server"

# The newest build of this main.go, whatever apiextensions-apiserver version it got: a cached
# binary is used without asking the mirror again (sid moves daily; a machine builds once).
cached() {
  local found
  found="$(ls -1dt "$base"/*-"$main_hash"/bin/"$BINARY" 2>/dev/null | head -1)" || true
  [ -n "$found" ] && [ -x "$found" ] && echo "$found"
}

if bin="$(cached)"; then
  say "cached CRD server $bin"
  echo "$bin"
  exit 0
fi

mkdir -p "$base"
# Two runs at once (two terminals, two CI steps) build it once.
exec 9>"$base/build.lock"
flock 9
if bin="$(cached)"; then
  say "CRD server just built by another run: $bin"
  echo "$bin"
  exit 0
fi

work="$base/work"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache" "$work/debs"

# 1. A private apt view of sid: the mirror and keyring of the machine's own first source.
main_sources=/etc/apt/sources.list.d/debian.sources
[ -f "$main_sources" ] || {
  say "no $main_sources to take the Debian mirror from: this build needs a Debian machine;"
  say "elsewhere, set APPENV_CRD_SERVER_BIN to an apiextensions-apiserver built from main.go"
  exit 1; }
uri="$(awk '/^URIs:/ {print $2; exit}' "$main_sources")"
keyring="$(awk '/^Signed-By:/ {print $2; exit}' "$main_sources")"
[ -n "$uri" ] && [ -n "$keyring" ] || { say "no URIs/Signed-By in $main_sources"; exit 1; }
echo "deb [signed-by=$keyring] $uri sid main" >"$work/apt/sid.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/apt/sid.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
  -o Dir::State::status=/dev/null -o Dir::Etc::Preferences=/dev/null
  -o Dir::Etc::PreferencesParts=/dev/null -o APT::Sandbox::User=root
)
say "apt-get update (private view of sid from $uri)"
apt-get "${apt_opts[@]}" update -qq >&2

api_deb_version="$(apt-cache "${apt_opts[@]}" show --no-all-versions "$API_PACKAGE" |
  awk '/^Version:/ {print $2; exit}')"
# 0.36.4-1 -> 0.36.4 (no epoch, no Debian revision); Kubernetes 1.36.4.
api_version="${api_deb_version#*:}"
api_version="${api_version%%-*}"
api_version="${api_version%%+*}"
[[ "$api_version" =~ ^0\.([0-9]+)\.([0-9]+) ]] ||
  { say "unexpected $API_PACKAGE version '$api_deb_version'"; exit 1; }
k8s_minor="${BASH_REMATCH[1]}"
k8s_version="v1.$k8s_minor.${BASH_REMATCH[2]}"
# sid's default Go toolchain, e.g. golang-1.26-go.
go_package="$(apt-cache "${apt_opts[@]}" depends golang-go | grep -o 'golang-1\.[0-9]*-go' | head -1)"
[ -n "$go_package" ] || { say "cannot tell sid's default Go toolchain from golang-go"; exit 1; }
go_minor="${go_package#golang-}"
go_minor="${go_minor%-go}"
say "$API_PACKAGE $api_deb_version (Kubernetes $k8s_version), Go $go_minor"

out="$base/$api_version-$main_hash"
root="$work/root-$api_version"
if [ ! -f "$root/.appenv-unpacked" ]; then
  # 2. Every golang-*-dev package it needs, resolved now (sid moves: no pinned versions).
  mapfile -t packages < <(
    apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "$API_PACKAGE" | grep -E '^golang-[^ ]*-dev$' | sort -u
  )
  packages+=("golang-$go_minor-go" "golang-$go_minor-src")
  say "downloading ${#packages[@]} packages"
  rm -rf "$work/debs" "$work"/root-*
  mkdir -p "$work/debs" "$root"
  (cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq "${packages[@]}" >&2)
  say "unpacking $(du -sh "$work/debs" | cut -f1) of packages into $root"
  for deb in "$work/debs"/*.deb; do dpkg -x "$deb" "$root"; done
  rm -rf "$work/debs"
  touch "$root/.appenv-unpacked"
fi

# 3. Our main, in a GOPATH entry of its own before Debian's.
goroot="$root/usr/lib/go-$go_minor"
gopath_own="$work/gopath"
rm -rf "$gopath_own"
mkdir -p "$gopath_own/src/appenv.dev/crd-server" "$work/gotmp"
cp "$main_dir"/*.go "$gopath_own/src/appenv.dev/crd-server/"
mkdir -p "$out/bin"
say "building $BINARY ($k8s_version) with $("$goroot/bin/go" version) (about 5 minutes on 2 cores)"
start=$(date +%s)
( while sleep 30; do say "  still building... $(( $(date +%s) - start ))s"; done ) &
beat=$!
trap 'kill $beat 2>/dev/null || true' EXIT
version_pkg="k8s.io/component-base/version"
GOROOT="$goroot" GOPATH="$gopath_own:$root/usr/share/gocode" GO111MODULE=off CGO_ENABLED=0 \
  GOTOOLCHAIN=local GOPROXY=off GOFLAGS= GOCACHE="$work/gocache" GOTMPDIR="$work/gotmp" \
  "$goroot/bin/go" build -p "${APPENV_GO_BUILD_JOBS:-2}" -o "$out/bin/$BINARY.tmp" \
  -ldflags "-X $version_pkg.gitVersion=$k8s_version -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$k8s_minor" \
  appenv.dev/crd-server >"$work/build.log" 2>&1 || {
    say "build failed; last lines of $work/build.log (the unpacked sources are kept for a retry):"
    tail -30 "$work/build.log" >&2; exit 1; }
kill $beat 2>/dev/null || true
mv "$out/bin/$BINARY.tmp" "$out/bin/$BINARY"
say "built in $(( $(date +%s) - start ))s; removing the sources and build cache ($(du -sh "$work" | cut -f1))"
rm -rf "$work"
# Builds of an older main.go or apiextensions version are never used again.
for old in "$base"/*/; do
  [ "${old%/}" = "$out" ] || rm -rf "$old"
done
say "CRD server ready: $out/bin/$BINARY ($(du -sh "$out/bin/$BINARY" | cut -f1))"
echo "$out/bin/$BINARY"
