#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store tests (tests/serve/test_store.py).
#
#   .ci/postgres.sh              start a fresh cluster; prints ONE line on stdout, the URL:
#                                  postgresql://postgres@127.0.0.1:PORT/warmstart_test
#   .ci/postgres.sh stop [DIR]   stop the cluster in DIR (the folder printed on stderr at start, or
#                                its data/ folder) and delete it; without DIR, every cluster this
#                                script started (/tmp/warmstart-pg.*)
#
# Usage in CI:  export WARMSTART_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#
# Installs PostgreSQL with apt-get when no /usr/lib/postgresql/*/bin/initdb exists. The cluster
# lives in a new folder under /tmp, is owned by the `postgres` system user (when run as root),
# listens on 127.0.0.1 only, on the first free port from $WARMSTART_PG_PORT (default 55432), and
# trusts every connection from 127.0.0.1 (no password): for tests only, never for real data.
# Running it twice starts a second cluster on the next free port. All chatter goes to stderr.
set -euo pipefail
exec 3>&1 1>&2 # stdout is kept for the URL alone

say() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

as_owner() { # run a command as the cluster's owner
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

find_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        printf '%s\n' "$d"
    fi
}

stop_one() { # $1: a folder this script made, or its data/ folder
    local base=${1%/}
    [ -d "$base/data" ] || base=$(dirname "$base")
    [ -d "$base/data" ] || die "$1 is not a cluster started by this script"
    local bin
    bin=$(find_bin)
    if [ -f "$base/data/postmaster.pid" ] && [ -n "$bin" ]; then
        (cd "$base" && as_owner "$bin/pg_ctl" -D "$base/data" -m fast -w stop) ||
            say "could not stop the server in $base (already stopped?)"
    fi
    rm -rf -- "$base"
    say "stopped and removed $base"
}

if [ "${1:-}" = "stop" ]; then
    if [ -n "${2:-}" ]; then
        stop_one "$2"
    else
        for base in /tmp/warmstart-pg.*; do
            if [ -d "$base" ]; then stop_one "$base"; fi
        done
    fi
    exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop [DIR]]"

# --- install when missing -------------------------------------------------------------------
BIN=$(find_bin)
if [ -z "$BIN" ]; then
    say "PostgreSQL is not installed; installing it with apt-get"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends postgresql
    BIN=$(find_bin)
    [ -n "$BIN" ] || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb exists"
fi
say "using $BIN ($("$BIN/postgres" --version))"

if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    say "creating the postgres system user"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin postgres
fi

# --- a free port ------------------------------------------------------------------------------
port_busy() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=${WARMSTART_PG_PORT:-55432}
case $PORT in '' | *[!0-9]*) die "WARMSTART_PG_PORT must be a port number, not '$PORT'" ;; esac
for _ in $(seq 1 100); do
    port_busy "$PORT" || break
    PORT=$((PORT + 1))
done
port_busy "$PORT" && die "no free port found near ${WARMSTART_PG_PORT:-55432}"

# --- a fresh cluster --------------------------------------------------------------------------
BASE=$(mktemp -d /tmp/warmstart-pg.XXXXXX)
DATA=$BASE/data
LOG=$BASE/server.log
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$BASE"
fi
chmod 700 "$BASE"
cd "$BASE" # the postgres user may not be able to read the caller's folder

as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale \
    >"$BASE/initdb.log" 2>&1 || {
    cat "$BASE/initdb.log" >&2
    die "initdb failed"
}

# Only this cluster's own socket folder and 127.0.0.1: nothing else can reach it.
as_owner tee "$DATA/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
EOF
as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# --- .ci/postgres.sh: a throwaway test server ---
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
max_connections = 100
# Tests never survive a crash of this server, so skip the disk flushes (much faster on CI).
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

# 3>&-: the server must not inherit the URL pipe, or `$(.ci/postgres.sh)` would wait for it forever.
if ! as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start </dev/null >&2 3>&-; then
    tail -n 30 "$LOG" >&2 || true
    die "the server did not start (log: $LOG)"
fi

"$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c 'CREATE DATABASE warmstart_test' >&2 || die "could not create database warmstart_test"

say "started in $BASE on 127.0.0.1:$PORT; stop with: $0 stop $BASE"
printf 'postgresql://postgres@127.0.0.1:%s/warmstart_test\n' "$PORT" >&3
