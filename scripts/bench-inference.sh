#!/usr/bin/env bash
# Inference benchmark: the engine figures of actors/inference/examples/bench_inference.rs (embeddings
# batch 1 / 32 vs sentence-transformers, chat prompt / generation tokens/s vs llama.cpp, 2
# threads), then the p50 latency of one short embedding request through HTTP (a release
# abi-node serving ./models, one keep-alive connection, 300 requests after 30 of warm-up).
# Usage: scripts/bench-inference.sh        BUILD=0 ABI_NODE_BIN=... BENCH_BIN=... to skip building
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/abi-target}
if [[ ${BUILD:-1} == 1 ]]; then
    CARGO_TARGET_DIR=$TARGET cargo build --release -q -p abi-node --bin abi-node
    CARGO_TARGET_DIR=$TARGET cargo build --release -q -p abi-inference --example bench_inference
fi
NODE_BIN=${ABI_NODE_BIN:-$TARGET/release/abi-node}
BENCH_BIN=${BENCH_BIN:-$TARGET/release/examples/bench_inference}
RAYON_NUM_THREADS=2 "$BENCH_BIN" models ../shared/data/inference

work=$(mktemp -d /tmp/abi-bench-inference.XXXXXX)
node_pid=
cleanup() {
    [[ -n $node_pid ]] && kill "$node_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$NODE_BIN" run --http "127.0.0.1:$port" --listen 127.0.0.1:0 --data-dir "$work/data" \
    --models-dir models >"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 600); do curl -fs -o /dev/null "http://127.0.0.1:$port/ready" && break; sleep 0.1; done
python3 - "$port" <<'PY'
import http.client, json, statistics, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
body = json.dumps({"model": "all-minilm-l6-v2", "input": "The quick brown fox."})
lat = []
for i in range(330):
    t = time.perf_counter()
    conn.request("POST", "/v1/embeddings", body, {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    assert r.status == 200, data
    if i >= 30:
        lat.append((time.perf_counter() - t) * 1e3)
lat.sort()
print(f"one short embedding through HTTP (keep-alive): p50 {statistics.median(lat):.2f} ms, "
      f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms over {len(lat)} requests "
      f"(engine-only p50 above; sentence-transformers forward 15.5 ms)")
PY
