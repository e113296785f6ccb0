"""The OpenAPI document drives schemathesis against a real node.

A node with authentication on (an admin API key, so every route is reachable)
and the models from ABI_MODELS_DIR is fuzzed through every operation of
`/openapi.json` for a bounded number of examples. The node must answer no
5xx and still be healthy afterwards.

Operations left out, and why:
- `GET /v1/cluster/stream`: an endless Server-Sent-Events stream; a fuzzer
  request would never finish.
- `POST /v1/cluster/actors/{path}/restart|kill`: generated paths could name
  real actors (`node-a/gateway` restarts the server under test). Their bad-input
  answers are covered by runtime/node/tests/cli.rs and auth.rs.
- `POST /v1/chat/completions`: a valid request generates up to `max_tokens`
  tokens (up to the model's context), so fuzzed requests run for minutes on a
  CPU, keep the chat pool busy (then `/ready`'s one-token probe times out, a
  503 by design) and end in the 30 s request deadline (504 by design). Even
  schemathesis' negative mode produces such requests (violations serde
  ignores). Its bad inputs are checked one by one below instead; valid chat
  requests are tested in tests/python/openai.

`GET /ready` stays in: on this node every subsystem is present, so 503 there
would be a real failure.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import _free_port, _node_bin

COLLECTION = "st_docs"


def _call(url, method="GET", key=None, body=None):
    req = urllib.request.Request(url, method=method, data=body)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


@pytest.fixture(scope="module")
def secured_node():
    work = tempfile.mkdtemp(prefix="abi-schemathesis-")
    keys = os.path.join(work, "keys.toml")
    key = subprocess.run(
        [_node_bin(), "keys", "create", "--role", "admin", "--keys-file", keys],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    http = f"127.0.0.1:{_free_port()}"
    args = [_node_bin(), "run", "--http", http, "--listen", f"127.0.0.1:{_free_port()}",
            "--data-dir", os.path.join(work, "data"), "--keys-file", keys]
    log_path = os.path.join(work, "node.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{http}"
    deadline = time.time() + 120
    while True:
        try:
            if _call(url + "/ready")[0] == 200:
                break
        except Exception:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.close()
            raise RuntimeError("abi-node did not become ready:\n" + open(log_path).read())
        time.sleep(0.3)
    # A small collection, so that fuzzed searches reach the index, not just a 404.
    _call(f"{url}/collections/{COLLECTION}", "PUT", key,
          b'{"vectors": {"size": 4, "distance": "Cosine"}}')
    points = ",".join(
        f'{{"id": {i}, "vector": [{i % 3}.5, 0.25, {i % 5}.0, 1.0], "payload": {{"tag": "t{i % 4}"}}}}'
        for i in range(1, 41))
    _call(f"{url}/collections/{COLLECTION}/points?wait=true", "PUT", key,
          f'{{"points": [{points}]}}'.encode())
    yield url, key, proc, work, log_path
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(work, ignore_errors=True)


def test_openapi_lists_the_secured_routes(secured_node):
    url, _key, _proc, _work, _log = secured_node
    import json
    status, body = _call(url + "/openapi.json")  # open route, no key
    assert status == 200
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.")
    assert "bearer" in doc["components"]["securitySchemes"]
    search = doc["paths"]["/collections/{name}/points/search"]["post"]
    assert search["security"], "reader routes declare their credentials"
    assert "security" not in doc["paths"]["/health"]["get"]


def test_schemathesis_finds_no_server_errors(secured_node):
    url, key, proc, work, log_path = secured_node
    config = os.path.join(work, "schemathesis.toml")
    # Point operations run against the seeded collection (random names would
    # only ever reach the 404 path); create/get/delete of collections keep
    # fuzzed names, so the seeded collection is never deleted mid-run.
    with open(config, "w") as f:
        for op in ["POST /collections/{name}/points/search",
                   "POST /collections/{name}/points/search/batch",
                   "POST /collections/{name}/points/query",
                   "POST /collections/{name}/points/query/batch",
                   "POST /collections/{name}/points/scroll",
                   "POST /collections/{name}/points/count",
                   "POST /collections/{name}/points",
                   "PUT /collections/{name}/points",
                   "POST /collections/{name}/points/delete",
                   "GET /collections/{name}/points/{id}"]:
            f.write(f'[[operations]]\ninclude-name = "{op}"\n'
                    f'parameters = {{ name = "{COLLECTION}" }}\n\n')
    examples = os.environ.get("ABI_SCHEMATHESIS_EXAMPLES", "15")

    def schemathesis(*extra):
        cmd = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", config, "run",
            f"{url}/openapi.json",
            "--header", f"Authorization: Bearer {key}",
            "--checks", "not_a_server_error",
            "--max-examples", examples,
            "--request-timeout", "30",
            "--seed", os.environ.get("ABI_SCHEMATHESIS_SEED", "20261122"),
            "--no-color",
            *extra,
        ]
        # cwd: schemathesis keeps its example database in ./.schemathesis.
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=work)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-8000:]
        assert re.search(r"\d+ generated, \d+ passed", out), out[-3000:]
        assert proc.poll() is None, open(log_path).read()[-5000:]

    schemathesis(
        "--exclude-path", "/v1/cluster/stream",
        "--exclude-path", "/v1/chat/completions",
        "--exclude-path-regex", r"^/v1/cluster/actors/\{path\}/(restart|kill)$",
    )
    # Still up and serving (the fuzzer may have deleted collections: that is allowed).
    assert proc.poll() is None, open(log_path).read()[-5000:]
    assert _call(url + "/health")[0] == 200
    assert _call(f"{url}/collections", key=key)[0] == 200


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    b'{"model": "smollm2-135m-instruct"}',
    b'{"model": "smollm2-135m-instruct", "messages": []}',
    b'{"model": "smollm2-135m-instruct", "messages": "hi"}',
    b'{"model": "smollm2-135m-instruct", "messages": [{"role": "robot", "content": "hi"}]}',
    b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": 5}]}',
    b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}',
    b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
    b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "n": 2}',
    b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}',
    b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
    b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}',
])
def test_bad_chat_requests_get_json_4xx(secured_node, body):
    import json
    url, key, proc, _work, _log = secured_node
    try:
        status, answer = _call(f"{url}/v1/chat/completions", "POST", key, body)
    except urllib.error.HTTPError as e:
        status, answer = e.code, e.read()
    assert 400 <= status < 500, (status, answer)
    assert json.loads(answer)["error"]["code"], answer
    assert proc.poll() is None
