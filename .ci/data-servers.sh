#!/usr/bin/env bash
# Makes a Debian bookworm machine ready for the backup agent's tests against real data servers:
#
#   1. PostgreSQL 15's server and client binaries in /usr/lib/postgresql/15/bin (initdb, pg_ctl,
#      postgres, pg_dump, pg_restore, psql): Debian's postgresql-15 and postgresql-client-15,
#      installed with apt-get when one is missing. A cluster Debian creates is left as it is (on a
#      machine without systemd it stays down); the tests run their own initdb in a temp dir.
#   2. pgvector for that PostgreSQL (`CREATE EXTENSION vector`): Debian's postgresql-15-pgvector
#      when the machine's apt sources have it (bookworm itself does not; bookworm-backports may).
#      Otherwise Debian's `pgvector` source package, the newest that downloads from sid, testing or
#      stable (sid's 0.8.7-1 .dsc answered 404 on this machine's mirror, so stable's 0.8.0-1 was
#      built), fetched through a private apt view (same mirror and keyring as the machine's
#      debian.sources, nothing added to the system's sources), built with
#      postgresql-server-dev-15 (installed with apt, at the installed server's version when the
#      mirror still has it, so the server is not upgraded) and `make install`ed into the system's
#      PostgreSQL 15 lib and extension dirs.
#   3. A Python venv with pinned moto[server] (an S3 API server, the `moto_server` command) and
#      duckdb, made with the machine's python3 (APPENV_PYTHON to choose another).
#   4. A real check: a throwaway cluster is initdb'ed, started, asked
#      `CREATE EXTENSION vector; SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector` (= 1), stopped and
#      deleted (about 2 s).
#
#   eval "$(bash .ci/data-servers.sh)"   # then export APPENV_PG_BIN APPENV_PG_USER ...
#
# Cached in ${APPENV_CACHE_DIR:-$HOME/.cache/appenv}:
#   pgvector/build-<Debian version>/   the unpacked, built pgvector source (a machine whose
#                                      PostgreSQL lost the extension only runs `make install`
#                                      again; nothing is downloaded); the apt lists used to
#                                      fetch it are deleted once it is built
#   venv-data-<hash of the pins>/      the venv; changed pins make a new one
# A machine with everything in place spends its time on the check only (under 5 s). Two runs at
# once wait for each other (flock on data-servers.lock there).
#
# stdout is only these lines, for eval (progress goes to stderr, with a [data-servers] prefix):
#   APPENV_PG_BIN=/usr/lib/postgresql/15/bin
#   APPENV_PG_USER=postgres            (empty when the script does not run as root)
#   APPENV_DATA_PYTHON=<venv>/bin/python
#   APPENV_MOTO_SERVER=<venv>/bin/moto_server
#
# Running PostgreSQL as root (how this script's check does it, and how the tests must): postgres
# and initdb refuse to run as root, so when the tests run as root every initdb, pg_ctl and postgres
# (pg_ctl stop too: pg_ctl refuses root) runs as APPENV_PG_USER, the `postgres` system user that
# Debian's postgresql-common creates:
#   - the cluster's folder is a temp dir under /tmp (not under /root or another 0700 root folder,
#     which that user cannot enter), chown'ed to APPENV_PG_USER before initdb;
#   - the command runs as that user: `runuser -u "$APPENV_PG_USER" -- <command>` (or, from Rust,
#     CommandExt::uid/gid with that user's ids), with its working directory set to that temp dir
#     (the caller's, e.g. /root, is not readable for it);
#   - `initdb -D <dir>/data -A trust -U postgres --no-locale -E UTF8 --no-sync`, then
#     `pg_ctl -D <dir>/data -l <dir>/log -w -o "-k <dir> -p <free port> -c listen_addresses=127.0.0.1" start`;
#   - clients (psql, pg_dump, pg_restore, the agent) may stay root: they connect as database user
#     `postgres` over 127.0.0.1:<port> or the socket in <dir> (-h <dir>), with trust auth.
# When APPENV_PG_USER is empty (not root), everything runs as the caller.
set -euo pipefail

PG_MAJOR=15
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
# The venv's pins: the venv's folder name is a hash of these lines.
REQUIREMENTS=(
  "moto[server]==5.2.5"
  "duckdb==1.5.6"
)
say() { printf '[data-servers] %s\n' "$*" >&2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    $SUDO apt-get update -qq >&2
    apt_updated=1
  fi
  say "apt-get install $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >&2
}

cache="${APPENV_CACHE_DIR:-$HOME/.cache/appenv}"
mkdir -p "$cache"
# Two runs at once install and build once; the second one finds everything in place.
exec 9>"$cache/data-servers.lock"
flock 9

# --- 1. PostgreSQL 15 ------------------------------------------------------------------------
pg_ready() {
  local tool
  for tool in initdb pg_ctl postgres pg_dump pg_restore psql; do
    [ -x "$PG_BIN/$tool" ] || return 1
  done
}
if pg_ready; then
  say "PostgreSQL $PG_MAJOR is installed: $("$PG_BIN/postgres" --version)"
else
  apt_install "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR"
  pg_ready || { say "$PG_BIN still lacks initdb, pg_ctl, postgres, pg_dump, pg_restore or psql"; exit 1; }
  say "installed $("$PG_BIN/postgres" --version)"
fi

# --- 2. pgvector -----------------------------------------------------------------------------
pg_config="$PG_BIN/pg_config"                    # from postgresql-client-15
[ -x "$pg_config" ] || pg_config=/usr/bin/pg_config  # postgresql-common's or libpq-dev's
vector_installed() {
  [ -f "$("$pg_config" --sharedir)/extension/vector.control" ] &&
    [ -f "$("$pg_config" --pkglibdir)/vector.so" ]
}

# Builds Debian's newest downloadable pgvector source (sid's, else testing's or stable's) in
# $pgv/build-<version> (cached) and installs it into the system's PostgreSQL.
build_pgvector() {
  local pgv="$cache/pgvector" build="" tree
  mkdir -p "$pgv"
  # A tree built before (e.g. the system's PostgreSQL was reinstalled since) is installed again.
  build="$(ls -1dt "$pgv"/build-*/ 2>/dev/null | while read -r dir; do
    [ -f "$dir/.appenv-built" ] && { echo "${dir%/}"; break; }; done)" || true

  # The compiler and headers, wanted for `make install` too (PGXS).
  local packages=()
  if [ ! -f "$("$pg_config" --includedir-server)/postgres.h" ] || [ ! -f "$("$pg_config" --pgxs)" ]; then
    # At the installed server's version when the mirror has it: a newer server-dev would upgrade
    # (and restart) postgresql-15 too.
    local installed
    installed="$(dpkg-query -W -f='${Version}' "postgresql-$PG_MAJOR" 2>/dev/null)" || installed=""
    if [ -n "$installed" ] && [ "$apt_updated" -eq 0 ]; then
      say "apt-get update"; $SUDO apt-get update -qq >&2; apt_updated=1
    fi
    if [ -n "$installed" ] && apt-cache madison "postgresql-server-dev-$PG_MAJOR" |
        awk -F' *[|] *' '{print $2}' | grep -qxF "$installed"; then
      packages+=("postgresql-server-dev-$PG_MAJOR=$installed")
    else
      packages+=("postgresql-server-dev-$PG_MAJOR")
    fi
  fi
  { command -v gcc && command -v make && command -v dpkg-source; } >/dev/null || packages+=(build-essential)
  [ "${#packages[@]}" -eq 0 ] || apt_install "${packages[@]}"

  if [ -z "$build" ]; then
    # A private apt view of Debian's sources (nothing is added to the system's apt sources): the
    # mirror and keyring of the machine's own first source.
    local main_sources=/etc/apt/sources.list.d/debian.sources uri keyring
    [ -f "$main_sources" ] || { say "no $main_sources to take the Debian mirror from"; exit 1; }
    uri="$(awk '/^URIs:/ {print $2; exit}' "$main_sources")"
    keyring="$(awk '/^Signed-By:/ {print $2; exit}' "$main_sources")"
    [ -n "$uri" ] && [ -n "$keyring" ] || { say "no URIs/Signed-By in $main_sources"; exit 1; }
    rm -rf "$pgv/apt" "$pgv/download"
    mkdir -p "$pgv/apt/lists/partial" "$pgv/apt/cache"
    # sid's first; testing's and stable's too, because the mirror may not serve the newest
    # upload's source files (seen: sid's pgvector 0.8.7-1 .dsc answered 404 while its .deb and
    # stable's 0.8.0-1 source were there). Aliases, not codenames: they do not age.
    local suite
    for suite in sid testing stable; do
      echo "deb-src [signed-by=$keyring] $uri $suite main"
    done >"$pgv/apt/sources.list"
    local apt_opts=(
      -o "Dir::Etc::SourceList=$pgv/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$pgv/apt/lists" -o "Dir::Cache=$pgv/apt/cache"
      -o Dir::State::status=/dev/null -o Dir::Etc::Preferences=/dev/null
      -o Dir::Etc::PreferencesParts=/dev/null -o APT::Sandbox::User=root
    )
    say "apt-get update (private view of sid's, testing's and stable's sources from $uri)"
    apt-get "${apt_opts[@]}" update -qq >&2
    local versions version="" candidate
    mapfile -t versions < <(apt-cache "${apt_opts[@]}" showsrc pgvector |
      awk '/^Version:/ {print $2}' | sort -urV)
    [ "${#versions[@]}" -gt 0 ] || { say "sid, testing and stable have no pgvector source package"; exit 1; }
    for candidate in "${versions[@]}"; do
      say "downloading the pgvector $candidate source"
      rm -rf "$pgv/download" && mkdir -p "$pgv/download"
      if (cd "$pgv/download" &&
          apt-get "${apt_opts[@]}" source --download-only -qq "pgvector=$candidate" >&2); then
        version="$candidate"
        break
      fi
      say "pgvector $candidate could not be downloaded; trying an older one"
    done
    [ -n "$version" ] || { say "no pgvector source (${versions[*]}) could be downloaded"; exit 1; }
    tree="$pgv/build-${version#*:}"
    rm -rf "$tree"
    dpkg-source -x "$pgv/download"/pgvector_*.dsc "$tree" >&2
    # dpkg-source leaves a copy of the upstream tarball beside the tree.
    rm -rf "$pgv/apt" "$pgv/download" "$pgv"/pgvector_*.orig.tar.*
    # OPTFLAGS: pgvector's default is -march=native; the cached build may meet another CPU.
    say "building pgvector $version against $("$pg_config" --version)"
    make -C "$tree" -s -j"$(nproc)" PG_CONFIG="$pg_config" OPTFLAGS= >&2
    touch "$tree/.appenv-built"
    build="$tree"
  else
    say "cached pgvector build $build"
  fi
  say "make install ($("$pg_config" --pkglibdir), $("$pg_config" --sharedir)/extension)"
  $SUDO make -C "$build" -s PG_CONFIG="$pg_config" OPTFLAGS= install >&2
}

if vector_installed; then
  say "pgvector is installed: $("$pg_config" --sharedir)/extension/vector.control ($(awk -F"'" '/default_version/ {print $2}' "$("$pg_config" --sharedir)/extension/vector.control"))"
else
  [ "$apt_updated" -eq 1 ] || { say "apt-get update"; $SUDO apt-get update -qq >&2; apt_updated=1; }
  candidate="$(apt-cache policy "postgresql-$PG_MAJOR-pgvector" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    say "the machine's apt sources have postgresql-$PG_MAJOR-pgvector $candidate"
    apt_install "postgresql-$PG_MAJOR-pgvector"
  else
    say "no postgresql-$PG_MAJOR-pgvector in the machine's apt sources: building Debian's pgvector source"
    build_pgvector
  fi
  vector_installed || { say "vector.control or vector.so is still missing"; exit 1; }
fi

# --- 3. The venv: moto[server] and duckdb ----------------------------------------------------
pins_hash="$(printf '%s\n' "${REQUIREMENTS[@]}" | sha256sum | cut -c1-12)"
venv="$cache/venv-data-$pins_hash"
python="$venv/bin/python"
moto_server="$venv/bin/moto_server"
# Written last: a venv without it is a half-finished one (an interrupted first run).
complete="$venv/.appenv-complete"
venv_works() {
  [ -x "$python" ] && [ -x "$moto_server" ] &&
    "$python" -c 'import duckdb; duckdb.sql("select 1").fetchall()' >/dev/null 2>&1 &&
    "$moto_server" --help >/dev/null 2>&1
}
if [ -f "$complete" ] && venv_works; then
  say "cached venv $venv (${REQUIREMENTS[*]})"
else
  base_python="${APPENV_PYTHON:-python3}"
  if ! command -v "$base_python" >/dev/null || ! "$base_python" -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$base_python" = python3 ]; then
      apt_install python3 python3-venv
    else
      say "$base_python is missing or has no venv/ensurepip"; exit 1
    fi
  fi
  say "creating $venv with $("$base_python" --version 2>&1)"
  rm -rf "$venv"
  "$base_python" -m venv "$venv" >&2
  say "pip install ${REQUIREMENTS[*]}"
  "$python" -m pip install --quiet --disable-pip-version-check --only-binary=duckdb \
    "${REQUIREMENTS[@]}" >&2
  venv_works || { say "the venv does not work: duckdb does not import or moto_server --help fails"; exit 1; }
  touch "$complete"
  # Venvs of older pins are never used again.
  for old in "$cache"/venv-data-*/; do
    [ "${old%/}" = "$venv" ] || rm -rf "$old"
  done
  say "venv ready: $("$python" -c 'import duckdb, importlib.metadata as m; print("duckdb", duckdb.__version__, "moto", m.version("moto"))')"
fi

# --- 4. A real check: a throwaway cluster with the vector extension --------------------------
pg_user=""
if [ "$(id -u)" -eq 0 ]; then
  pg_user=postgres
  id -u "$pg_user" >/dev/null 2>&1 || { say "no '$pg_user' user (postgresql-common creates it)"; exit 1; }
fi
# Under /tmp: the postgres user cannot enter root's home or a 0700 TMPDIR.
check="$(mktemp -d /tmp/appenv-data-servers.XXXXXX)"
[ -z "$pg_user" ] || chown "$pg_user:" "$check"
as_pg() {
  if [ -n "$pg_user" ]; then
    (cd "$check" && runuser -u "$pg_user" -- "$@")
  else
    (cd "$check" && "$@")
  fi
}
cleanup() {
  if [ -f "$check/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$check/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$check"
}
trap cleanup EXIT
start_ms=$(date +%s%3N)
as_pg "$PG_BIN/initdb" -D "$check/data" -A trust -U postgres --no-locale -E UTF8 --no-sync \
  >"$check/initdb.log" 2>&1 || { say "initdb failed:"; cat "$check/initdb.log" >&2; exit 1; }
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg "$PG_BIN/pg_ctl" -D "$check/data" -l "$check/server.log" -w -t 30 \
  -o "-k $check -p $port -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null ||
  { say "the server did not start:"; cat "$check/server.log" >&2; exit 1; }
distance="$("$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
  -c 'CREATE EXTENSION vector' -c "SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector")" ||
  { say "psql failed; server log:"; cat "$check/server.log" >&2; exit 1; }
vector_version="$("$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$port" -U postgres -d postgres \
  -c "SELECT extversion FROM pg_extension WHERE extname = 'vector'")"
as_pg "$PG_BIN/pg_ctl" -D "$check/data" -m fast -w stop >/dev/null
[ "$distance" = 1 ] || { say "expected distance 1, got '$distance'"; exit 1; }
elapsed_ms=$(( $(date +%s%3N) - start_ms ))
say "checked in $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)))s: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') as ${pg_user:-$(id -un)}, vector $vector_version, distance $distance"

# Quoted for eval where a value needs it (a cache path with spaces); plain otherwise.
out() { if [ -z "$2" ]; then echo "$1="; else printf '%s=%q\n' "$1" "$2"; fi; }
out APPENV_PG_BIN "$PG_BIN"
out APPENV_PG_USER "$pg_user"
out APPENV_DATA_PYTHON "$python"
out APPENV_MOTO_SERVER "$moto_server"
