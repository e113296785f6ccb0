#!/usr/bin/env bash
# Vector benchmark on GloVe-6B-50d (the 390k base and 5k dev queries of ../shared/data/vector),
# all in one run on one machine: raw hnsw_rs (one index), the engine with 1 and 4 shards
# (in process), and the HTTP path (a release abi-node, 4 shards, Qdrant API, one client),
# each swept over ef, QPS with 1 and 2 clients at the first ef reaching recall@10 >= 0.95,
# ratios against raw hnsw_rs and the ANCHORS.md figures, and the HTTP path's p50 overhead.
#
# Usage: scripts/bench-vector.sh [bench args, e.g. --base 100000 --queries 1000]
#        BUILD=0 ABI_NODE_BIN=... BENCH_BIN=... scripts/bench-vector.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/abi-target}
if [[ ${BUILD:-1} == 1 ]]; then
    CARGO_TARGET_DIR=$TARGET cargo build --release -q -p abi-node --bin abi-node
    CARGO_TARGET_DIR=$TARGET cargo build --release -q -p abi-vector --example bench
fi
NODE_BIN=${ABI_NODE_BIN:-$TARGET/release/abi-node}
BENCH_BIN=${BENCH_BIN:-$TARGET/release/examples/bench}
work=$(mktemp -d /tmp/abi-bench-vector.XXXXXX)
node_pid=
cleanup() {
    [[ -n $node_pid ]] && kill "$node_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
mkdir -p "$work/models"
"$NODE_BIN" run --http "127.0.0.1:$port" --listen "127.0.0.1:$(free_port)" --data-dir "$work/data" \
    --models-dir "$work/models" >"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 300); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/health" && break
    sleep 0.1
done
"$BENCH_BIN" --efs "${EFS:-8,12,16,24,32,40,48,56,64,80,88,96,112,128}" --http "http://127.0.0.1:$port" "$@"
