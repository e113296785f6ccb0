#!/usr/bin/env bash
# The CUDA inference path (`device = "cuda:N"`, the `cuda` cargo feature), which CI cannot run.
#
#   scripts/cuda-check.sh toolkit [DIR]   nvcc, headers and CUDA 13 libraries from NVIDIA's PyPI
#                                         wheels into DIR (default ~/.cache/abi-cuda13), plus a
#                                         link-time stub of libcuda (the driver provides the real
#                                         one): for machines without a CUDA toolkit
#   scripts/cuda-check.sh build           builds the CUDA test binary of abi-inference and
#                                         abi-node --features cuda (CUDA_ROOT = the toolkit; by
#                                         default /usr/local/cuda, else the DIR above)
#   scripts/cuda-check.sh node [ABI_NODE] on a machine with an NVIDIA GPU: runs abi-node with
#                                         configs/gpu-node.toml (models in ./models) and checks
#                                         through HTTP: /ready, the leases in /v1/devices, an
#                                         embedding, a chat, p50 of a short embedding request
#   scripts/cuda-check.sh run TESTBIN     on a machine with an NVIDIA GPU: runs the CUDA tests
#                                         (embeddings against the reference, teacher-forced chat,
#                                         pools on cuda:0; prints GPU throughput). Needs
#                                         ABI_MODELS_DIR and ABI_SHARED_DATA unless the defaults
#                                         (./models, ../shared/data) exist.
set -euo pipefail
cd "$(dirname "$0")/.."

toolkit_dir() { echo "${1:-$HOME/.cache/abi-cuda13}"; }

case "${1:-}" in
toolkit)
    dir=$(toolkit_dir "${2:-}")
    mkdir -p "$dir/whl"
    python3 -m pip download --no-deps -q -d "$dir/whl" \
        "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
        "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-cccl==13.0.*" \
        "nvidia-curand==10.4.0.*" "nvidia-cublas==13.0.*"
    for w in "$dir"/whl/*.whl; do python3 -m zipfile -e "$w" "$dir/ex"; done
    root="$dir/ex/nvidia/cu13"
    chmod +x "$root"/bin/* "$root"/nvvm/bin/*
    (cd "$root/lib" && for l in libcublas libcublasLt libcudart libnvrtc; do ln -sf $l.so.13 $l.so; done \
        && ln -sf libcurand.so.10 libcurand.so)
    # candle links libcuda (cudarc's dynamic-linking); the wheels have no driver stub, so make
    # one exporting the driver API that cudarc declares. The real libcuda.so.1 comes with the
    # driver on the GPU machine.
    cudarc=$(find "$HOME/.cargo/registry/src" -maxdepth 1 -path '*index.crates.io*' | head -1)
    cudarc=$(ls -d "$cudarc"/cudarc-0.19.* | tail -1)
    mkdir -p "$root/lib/stubs"
    grep -rhoE 'pub (unsafe )?fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys/" | sed -E 's/.*fn //' \
        | sort -u | awk '{print "void "$1"(void){}"}' >"$dir/libcuda-stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$dir/libcuda-stub.c"
    echo "CUDA_ROOT=$root"
    ;;
build)
    if [ -z "${CUDA_ROOT:-}" ]; then
        if [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_ROOT=/usr/local/cuda
        else CUDA_ROOT="$(toolkit_dir)/ex/nvidia/cu13"; fi
    fi
    [ -x "$CUDA_ROOT/bin/nvcc" ] || { echo "no nvcc under $CUDA_ROOT: run '$0 toolkit' first"; exit 1; }
    export CUDA_ROOT PATH="$CUDA_ROOT/bin:$PATH"
    export LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib64:$CUDA_ROOT/lib/stubs:$CUDA_ROOT/lib64/stubs"
    # Hopper unless told otherwise (candle-kernels compiles for this compute capability).
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/abi-cuda}"
    cargo test --release -p abi-inference --features cuda --test cuda --no-run
    cargo build --release -p abi-node --features cuda --bin abi-node
    # The plugin builds on its own: its cudarc loads the libraries at run time, candle's links
    # them, and cudarc refuses both in one build.
    cargo build --release -p abi-plugin-cuda
    ls -la "$CARGO_TARGET_DIR"/release/deps/cuda-* "$CARGO_TARGET_DIR/release/abi-node" \
        "$CARGO_TARGET_DIR/release/libabi_plugin_cuda.so" | grep -v '\.d$'
    ;;
node)
    bin="${2:-${CARGO_TARGET_DIR:-$HOME/.cache/abi-cuda}/release/abi-node}"
    work=$(mktemp -d)
    (cd configs && exec "$bin" run --config gpu-node.toml --data-dir "$work/data" >"$work/node.log" 2>&1) &
    pid=$!
    trap 'kill $pid 2>/dev/null || true' EXIT
    url=http://127.0.0.1:8080
    for _ in $(seq 1 120); do curl -sf $url/ready >/dev/null && break; sleep 0.5; done
    curl -s $url/ready; echo
    curl -s $url/v1/devices; echo
    curl -sf $url/v1/embeddings -H 'content-type: application/json' \
        -d '{"model":"all-minilm-l6-v2","input":["A GPU runs this."]}' \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print("embedding dim", len(d["data"][0]["embedding"]))'
    curl -sf $url/v1/chat/completions -H 'content-type: application/json' \
        -d '{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":16,"temperature":0}' \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print("chat:", repr(d["choices"][0]["message"]["content"]), d["usage"])'
    for _ in $(seq 1 60); do
        curl -s -o /dev/null -w '%{time_total}\n' $url/v1/embeddings -H 'content-type: application/json' \
            -d '{"model":"all-minilm-l6-v2","input":"The quick brown fox."}'
    done | sort -n | awk '{a[NR]=$1} END {printf "short embedding over HTTP: p50 %.2f ms (60 requests)\n", a[int(NR/2)+1]*1000}'
    kill -TERM $pid; rc=0; wait $pid || rc=$?; echo "node exit code $rc"
    grep -iE 'lease|cuda|error' "$work/node.log" | head -20
    ;;
run)
    bin="${2:?test binary}"
    "$bin" --test-threads 1 --nocapture
    ;;
*)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac
