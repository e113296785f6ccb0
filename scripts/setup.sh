#!/usr/bin/env bash
# Installs what building and testing abi needs on a fresh Debian machine:
# apt packages (protoc for etcd-client; etcd-server, lavapipe and chromium for
# tests), a Python venv with the official clients, and the model files.
# Idempotent: skips what is present. Usage: scripts/setup.sh [--tests]
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--tests" ] && want_tests=1

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/*.proto), which etcd's protos import:
# a recommendation of protobuf-compiler, so not pulled in with --no-install-recommends.
[ -e /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v cc >/dev/null || need+=(build-essential)
if [ "$want_tests" = 1 ]; then
    command -v etcd >/dev/null || need+=(etcd-server)
    command -v chromium >/dev/null || need+=(chromium)
    command -v promtool >/dev/null || need+=(prometheus)
    [ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || need+=(mesa-vulkan-drivers libvulkan1)
fi
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Python venv for model fetching and the client tests (openai, qdrant-client).
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if [ "$want_tests" = 1 ]; then
    .venv/bin/python -m pip install --quiet -r tests/python/requirements.txt
    # Arize Phoenix: the real OTLP trace receiver of tests/python/test_tracing.py.
    # Its own venv: ~850 MB of dependencies that nothing else should import.
    if [ ! -x .venv-phoenix/bin/phoenix ]; then
        echo "setup: arize-phoenix into .venv-phoenix (~2 min)"
        python3 -m venv .venv-phoenix
        .venv-phoenix/bin/python -m pip install --quiet "arize-phoenix==20.26.1"
    fi
fi

PYTHON=.venv/bin/python bash scripts/fetch-models.sh "${ABI_MODELS_DIR:-./models}"
