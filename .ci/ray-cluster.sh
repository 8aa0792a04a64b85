#!/usr/bin/env bash
# A throwaway 2-node Ray cluster on this machine, for the `--engine ray` tests (tests/scale/).
#
#   .ci/ray-cluster.sh              start a head node and a worker node (`ray start`, 1 CPU each);
#                                   prints ONE line on stdout, the head's address 127.0.0.1:PORT
#   .ci/ray-cluster.sh stop [DIR]   stop the cluster in DIR (printed on stderr at start) by the
#                                   process groups it recorded, and delete DIR; without DIR, every
#                                   cluster this script started (/tmp/warmstart-ray.*)
#
# Usage in CI:
#   export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<random hex>   # every Ray process needs the same
#   export WARMSTART_TEST_RAY_ADDRESS="$(.ci/ray-cluster.sh)"
#
# Each node starts in a session of its own (setsid), so every process it leaves running (the
# GCS, raylet, agents, workers) shares its process group, and `stop` kills exactly those groups:
# never `ray stop`, which stops every Ray process of the user. Uses the Ray of .venv (or $RAY).
set -euo pipefail
exec 3>&1 1>&2 # stdout is kept for the address alone

say() { printf 'ray-cluster.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

stop_one() { # $1: a folder this script made
    local base=${1%/} pgid
    [ -f "$base/pgids" ] || die "$1 is not a cluster started by this script"
    for sig in TERM KILL; do
        while read -r pgid; do
            kill -s "$sig" -- "-$pgid" 2>/dev/null || true
        done <"$base/pgids"
        [ "$sig" = KILL ] || sleep 3 # the GCS ignores TERM; the rest get a moment to exit
    done
    rm -rf -- "$base"
    say "stopped and removed $base"
}

if [ "${1:-}" = "stop" ]; then
    if [ -n "${2:-}" ]; then
        stop_one "$2"
    else
        for base in /tmp/warmstart-ray.*; do
            if [ -d "$base" ]; then stop_one "$base"; fi
        done
    fi
    exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop [DIR]]"

RAY=${RAY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/ray}
[ -x "$RAY" ] || die "no ray at $RAY: pip install 'warmstart[ray]' (or set RAY=/path/to/ray)"
[ "${RAY_AUTH_MODE:-}" = token ] && [ -n "${RAY_AUTH_TOKEN:-}" ] ||
    die "export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN first: every node and driver needs them"
export RAY_USAGE_STATS_ENABLED=0

port_busy() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=${WARMSTART_RAY_PORT:-6390}
for _ in $(seq 1 100); do
    port_busy "$PORT" || break
    PORT=$((PORT + 1))
done
port_busy "$PORT" && die "no free port found near ${WARMSTART_RAY_PORT:-6390}"

BASE=$(mktemp -d /tmp/warmstart-ray.XXXXXX)
node() { # $1: a name for its log; the rest: `ray start` arguments
    local name=$1
    shift
    # 3>&-: the nodes must not inherit the address pipe, or `$(.ci/ray-cluster.sh)` would wait
    # for them forever. The subshell records its pid, which setsid made a process group id.
    setsid bash -c 'echo $$ >>"$0/pgids"; exec "$@"' "$BASE" "$RAY" start "$@" \
        --num-cpus=1 --object-store-memory=400000000 --disable-usage-stats \
        </dev/null >"$BASE/$name.log" 2>&1 3>&- || {
        cat "$BASE/$name.log" >&2
        stop_one "$BASE"
        die "ray start ($name) failed"
    }
}
node head --head --port="$PORT" --node-ip-address=127.0.0.1 --temp-dir="$BASE/tmp" \
    --include-dashboard=false
node worker --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1

say "started a head and a worker in $BASE (127.0.0.1:$PORT); stop with: $0 stop $BASE"
printf '127.0.0.1:%s\n' "$PORT" >&3
