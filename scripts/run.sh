#!/usr/bin/env bash
# One command from a fresh clone to a running single-node abi: installs build
# dependencies, fetches the models through pip, builds the workspace (node and
# plugins) in release mode, and starts abi-node on the embedded default
# (HTTP on 127.0.0.1:8080, QUIC on 127.0.0.1:7700, data under ./abi-data).
# Extra arguments go to `abi-node run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/abi-target}"
cargo build --release --workspace
exec "$CARGO_TARGET_DIR/release/abi-node" run "$@"
