#!/usr/bin/env python3
"""Regenerates actors/inference/tests/data/llm_reference.json: llama.cpp's greedy completions of
the dev prompts with the logits of every step, for the teacher-forced correctness test.

The shared reference (shared/data/inference/llm_completions_dev.json) was written with zeroed
completion ids and logits, so it cannot serve the teacher-forced comparison; this script redoes
it the way its FORMAT.md describes: llama-cpp-python 0.3.36, the same GGUF, n_ctx 2048,
n_batch 512, 2 threads, greedy argmax over raw logits, stop at EOS (id 2) or 32 new tokens,
prompt ids as in the shared file (chat template rendered, no BOS, special tokens parsed).

    python3 -m venv .venv-llama && CMAKE_ARGS=-DGGML_NATIVE=ON .venv-llama/bin/pip install \
        llama-cpp-python==0.3.36 numpy
    .venv-llama/bin/python scripts/llm-reference.py [MODELS_DIR] [SHARED_DATA_DIR]
"""

import json
import os
import sys

import numpy as np
from llama_cpp import Llama, __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models")
SHARED = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "..", "shared", "data")
GGUF = os.path.join(MODELS, "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "actors", "inference", "tests", "data", "llm_reference.json")
EOS = 2
MAX_NEW = 32


def main():
    shared = json.load(open(os.path.join(SHARED, "inference", "llm_completions_dev.json")))
    llm = Llama(model_path=GGUF, n_ctx=2048, n_batch=512, n_threads=2, n_threads_batch=2,
                logits_all=True, verbose=False)
    results = []
    for r in shared["results"]:
        prompt = r["prompt_ids"]
        llm.reset()
        llm.eval(prompt)
        steps, completion = [], []
        for _ in range(MAX_NEW):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            top = np.argsort(-logits, kind="stable")[:5]
            chosen = int(top[0])
            steps.append({
                "id": chosen,
                "logit": float(logits[chosen]),
                "top5": [[int(i), float(logits[i])] for i in top],
                "margin_top1_top2": float(logits[top[0]] - logits[top[1]]),
            })
            completion.append(chosen)
            if chosen == EOS:
                break
            llm.eval([chosen])
        text = llm.detokenize([t for t in completion if t != EOS]).decode("utf-8", "replace")
        results.append({
            "id": r["id"],
            "prompt_ids": prompt,
            "completion_ids": completion,
            "completion_text": text,
            "finish_reason": "stop" if completion[-1] == EOS else "length",
            "steps": steps,
            "min_margin_top1_top2": min(s["margin_top1_top2"] for s in steps),
        })
        print(f"{r['id']}: {len(completion)} tokens, min margin "
              f"{results[-1]['min_margin_top1_top2']:.3f}: {text!r}")
    out = {
        "model": os.path.basename(GGUF),
        "decoding": shared["decoding"],
        "info": {"llama_cpp_python": __version__, "n_threads": 2, "n_ctx": 2048, "n_batch": 512,
                 "logits_all": True, "system_info": Llama.__module__ and
                 __import__("llama_cpp").llama_print_system_info().decode()},
        "results": results,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
