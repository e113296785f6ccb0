#!/usr/bin/env bash
# Gateway throughput next to the HTTP ceiling, in one run on one machine:
#   1. a bare actix-web hello server (actors/gateway/examples/bare_hello.rs, 2 workers),
#   2. abi-node GET /health (the full middleware stack, open route),
#   3. abi-node GET /v1/cluster/events with an API key (authentication and role
#      check, no actor ask: the gateway's own cost),
#   4. abi-node POST /collections/bench/points/search with an API key (auth, role
#      check, request id, deadline, JSON parse, actor asks, HNSW search, JSON answer)
# and, as the floor of any JSON POST here, the bare server echoing the search's
# body (parse and write the JSON, nothing else)
# with wrk: 64 connections, 2 threads, 10 s each. Prints req/s, p99 and the ratio
# to the bare server (goal: authenticated search >= 0.7x).
#
# Usage: scripts/bench-gateway.sh            (builds release binaries first)
#        BUILD=0 ABI_NODE_BIN=... HELLO_BIN=... scripts/bench-gateway.sh
# Env: DURATION (10s), CONNECTIONS (64), THREADS (2), POINTS (1000), DIM (16).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/abi-target}
if [[ ${BUILD:-1} == 1 ]]; then
    # Two invocations: naming an example restricts a build to examples.
    CARGO_TARGET_DIR=$TARGET cargo build --release -q -p abi-node --bin abi-node
    CARGO_TARGET_DIR=$TARGET cargo build --release -q -p abi-gateway --example bare_hello
fi
NODE_BIN=${ABI_NODE_BIN:-$TARGET/release/abi-node}
HELLO_BIN=${HELLO_BIN:-$TARGET/release/examples/bare_hello}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
POINTS=${POINTS:-1000}
DIM=${DIM:-16}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)" >&2; exit 1; }

work=$(mktemp -d /tmp/abi-bench-gateway.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 1 300); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

hello_port=$(free_port)
"$HELLO_BIN" "127.0.0.1:$hello_port" 2 >"$work/hello.log" 2>&1 &
pids+=($!)

node_port=$(free_port)
admin=$("$NODE_BIN" keys create --role admin --keys-file "$work/keys.toml" 2>/dev/null)
reader=$("$NODE_BIN" keys create --role reader --keys-file "$work/keys.toml" 2>/dev/null)
mkdir -p "$work/models"   # no models: the search path needs none
"$NODE_BIN" run --http "127.0.0.1:$node_port" --listen "127.0.0.1:$(free_port)" \
    --data-dir "$work/data" --models-dir "$work/models" --keys-file "$work/keys.toml" \
    >"$work/node.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$hello_port/"
wait_http "http://127.0.0.1:$node_port/health"

node="http://127.0.0.1:$node_port"
curl -fs -X PUT -H "api-key: $admin" -H 'content-type: application/json' \
    "$node/collections/bench" -d "{\"vectors\":{\"size\":$DIM,\"distance\":\"Cosine\"}}" >/dev/null
python3 - "$POINTS" "$DIM" >"$work/points.json" <<'PY'
import json, random, sys
n, d = int(sys.argv[1]), int(sys.argv[2])
random.seed(7)
print(json.dumps({"points": [{"id": i, "vector": [random.random() for _ in range(d)],
                              "payload": {"n": i}} for i in range(1, n + 1)]}))
PY
curl -fs -X PUT -H "api-key: $admin" -H 'content-type: application/json' \
    "$node/collections/bench/points?wait=true" --data-binary @"$work/points.json" >/dev/null
query=$(python3 -c "import json,random; random.seed(1); print(json.dumps({'vector':[random.random() for _ in range($DIM)],'limit':5}))")
# The request must succeed before it is measured.
curl -fs -X POST -H "api-key: $reader" -H 'content-type: application/json' \
    "$node/collections/bench/points/search" -d "$query" | grep -q '"status":"ok"'
cat >"$work/key.lua" <<LUA
wrk.headers["api-key"] = "$reader"
LUA
cat >"$work/echo.lua" <<LUA
wrk.method = "POST"
wrk.body = '$query'
wrk.headers["Content-Type"] = "application/json"
LUA
cat >"$work/search.lua" <<LUA
wrk.method = "POST"
wrk.body = '$query'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["api-key"] = "$reader"
LUA

declare -A rps p99
bench() { # name url [wrk args]
    local name=$1 url=$2; shift 2
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
    if grep -q "Non-2xx" <<<"$out"; then
        echo "$name: non-2xx answers during the run:" >&2
        echo "$out" >&2
        exit 1
    fi
    rps[$name]=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99[$name]=$(awk '$1 == "99%" {print $2}' <<<"$out")
}
bench bare "http://127.0.0.1:$hello_port/"
bench echo "http://127.0.0.1:$hello_port/echo" -s "$work/echo.lua"
bench health "$node/health"
bench events "$node/v1/cluster/events" -s "$work/key.lua"
bench search "$node/collections/bench/points/search" -s "$work/search.lua"

printf '\nwrk -t%s -c%s -d%s, %s, %s cores\n' "$THREADS" "$CONNECTIONS" "$DURATION" "$(date -u +%FT%TZ)" "$(nproc)"
printf '%-42s %12s %10s %8s\n' "target" "req/s" "p99" "x bare"
for name in bare echo health events search; do
    case $name in
        bare) label="bare actix-web hello (2 workers)";;
        echo) label="bare actix-web JSON echo of the search body";;
        health) label="abi-node GET /health";;
        events) label="abi-node GET /v1/cluster/events, API key";;
        search) label="abi-node search, API key (${POINTS}x${DIM})";;
    esac
    ratio=$(python3 -c "print(f'{${rps[$name]}/${rps[bare]}:.2f}')")
    printf '%-42s %12s %10s %8s\n' "$label" "${rps[$name]}" "${p99[$name]}" "$ratio"
done
