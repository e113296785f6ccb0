"""The OpenAI-compatible API (embeddings, chat, streamed chat) through the official `openai`
client, against a real abi-node serving all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (Q4_1).

Needs the models fetched by scripts/fetch-models.sh and the node started by ../conftest.py
(or ABI_HTTP pointing at a running gateway)."""
import base64
import json
import os
import time

import numpy as np
import openai
import pytest
import requests

EMB = "all-minilm-l6-v2"
CHAT = "smollm2-135m-instruct"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DATA = os.environ.get("ABI_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))


@pytest.fixture(scope="module")
def client(abi_http):
    return openai.OpenAI(base_url=abi_http + "/v1", api_key=os.environ.get("ABI_API_KEY", "unused"),
                         max_retries=0, timeout=120)


def _reference(n):
    rows = [json.loads(l) for l in open(os.path.join(DATA, "inference", "embed_dev_texts.jsonl"))][:n]
    vecs = np.fromfile(os.path.join(DATA, "inference", "embed_dev.f32"), dtype="<f4").reshape(-1, 384)[:n]
    return [r["text"] for r in rows], vecs


def test_models_lists_both(client):
    ids = {m.id for m in client.models.list().data}
    assert {EMB, CHAT} <= ids


def test_embeddings_match_sentence_transformers(client):
    texts, ref = _reference(16)
    out = client.embeddings.create(model=EMB, input=texts)
    assert [d.index for d in out.data] == list(range(16))
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999, cos.min()
    assert out.usage.prompt_tokens > 16


def test_embeddings_single_string_and_base64(client):
    f = client.embeddings.create(model=EMB, input="A single sentence.")
    assert len(f.data) == 1 and len(f.data[0].embedding) == 384
    raw = requests.post(client.base_url.join("embeddings").__str__(),
                        json={"model": EMB, "input": "A single sentence.", "encoding_format": "base64"},
                        timeout=60).json()
    b = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(b, np.array(f.data[0].embedding, dtype=np.float32), atol=1e-6)
    # The client asks for base64 by default when given encoding_format=base64 and decodes it.
    e = client.embeddings.create(model=EMB, input=["x y z"], encoding_format="base64")
    assert e.data[0].embedding is not None


@pytest.mark.parametrize("body,status", [
    ({"model": EMB, "input": []}, 400),
    ({"model": EMB, "input": ""}, 400),
    ({"model": EMB, "input": ["ok"] * 2049}, 400),
    ({"model": "no-such-model", "input": "x"}, 404),
    ({"model": EMB, "input": "x", "encoding_format": "int8"}, 400),
    ({"model": CHAT, "input": "x"}, 400),
])
def test_embeddings_bad_input(abi_http, body, status):
    r = requests.post(abi_http + "/v1/embeddings", json=body, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] and err["message"]


def test_non_utf8_and_bad_json_are_400(abi_http):
    for payload in (b'{"model": "\xff\xfe", "input": "x"}', b"{not json"):
        r = requests.post(abi_http + "/v1/embeddings", data=payload,
                          headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 400, r.text
        assert "error" in r.json()


def test_chat_completion_with_usage_and_logprobs(client):
    r = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12, temperature=0, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    assert r.object == "chat.completion"
    assert c.message.role == "assistant" and c.message.content
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == 37  # the llama.cpp reference prompt length for this message
    assert 1 <= r.usage.completion_tokens <= 12
    lp = c.logprobs.content
    assert lp and all(t.logprob <= 0 and len(t.top_logprobs) == 3 for t in lp)
    assert "".join(t.token for t in lp).startswith(c.message.content[:5])


def test_streamed_chat_equals_whole_chat(client):
    msgs = [{"role": "user", "content": "Give me three tips for staying focused while studying."}]
    whole = client.chat.completions.create(model=CHAT, messages=msgs, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(model=CHAT, messages=msgs, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    parts, finish, usage = [], None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.content:
                parts.append(ch.delta.content)
            if ch.finish_reason:
                finish = ch.finish_reason
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage and usage.completion_tokens == whole.usage.completion_tokens
    assert len(parts) > 3, "text arrives in several chunks"


def test_sse_wire_format_ends_with_done(abi_http):
    r = requests.post(abi_http + "/v1/chat/completions", stream=True, timeout=120, json={
        "model": CHAT, "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 5, "temperature": 0, "stream": True})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = [l for l in r.iter_lines(decode_unicode=True) if l]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_seeded_sampling_is_reproducible(client):
    args = dict(model=CHAT, messages=[{"role": "user", "content": "Write a word."}], max_tokens=8,
                temperature=0.9, top_p=0.9, seed=1234)
    a = client.chat.completions.create(**args).choices[0].message.content
    b = client.chat.completions.create(**args).choices[0].message.content
    assert a == b


def test_stop_string(client):
    r = client.chat.completions.create(model=CHAT, max_tokens=40, temperature=0, stop=[","],
                                       messages=[{"role": "user", "content": "List five fruits separated by commas."}])
    assert "," not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("body,status", [
    ({"model": CHAT, "messages": []}, 400),
    ({"model": CHAT, "messages": [{"role": "wizard", "content": "x"}]}, 400),
    ({"model": CHAT, "messages": [{"role": "user", "content": "x"}], "temperature": 5}, 400),
    ({"model": CHAT, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, 400),
    ({"model": CHAT, "messages": [{"role": "user", "content": "word " * 9000}], "max_tokens": 4}, 400),
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404),
    ({"model": EMB, "messages": [{"role": "user", "content": "x"}]}, 400),
])
def test_chat_bad_input(abi_http, body, status):
    r = requests.post(abi_http + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_client_disconnect_stops_generation(abi_http, client):
    r = requests.post(abi_http + "/v1/chat/completions", stream=True, timeout=120, json={
        "model": CHAT, "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
        "max_tokens": 3000, "temperature": 0, "stream": True})
    lines = r.iter_lines()
    next(lines)
    next(lines)
    r.close()  # the client goes away after the first pieces
    t = time.time()
    out = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Hi"}],
                                         max_tokens=4, temperature=0)
    assert out.choices[0].message.content
    # With one worker, an uncancelled 3000-token story would hold it for a minute or more.
    assert time.time() - t < 20
