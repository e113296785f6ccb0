"""Traces reach a real OTLP receiver: Arize Phoenix (PyPI `arize-phoenix`,
installed by `scripts/setup.sh --tests` into its own venv, `.venv-phoenix`).

A node exports to Phoenix over OTLP/HTTP protobuf; a request that carries a
W3C `traceparent` must come back as one trace whose spans cover every actor it
touched (gateway -> vector manager -> each shard; gateway -> inference pool),
each span parented on the one that called it. The spans are read back through
Phoenix's REST API.
"""
import os
import secrets
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import ROOT, _free_port, _node_bin

PHOENIX = os.environ.get("PHOENIX_BIN") or os.path.join(ROOT, ".venv-phoenix", "bin", "phoenix")
MODELS = os.environ.get("ABI_MODELS_DIR") or os.path.join(ROOT, "models")


def _wait(url, proc, what, seconds, log):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not start:\n" + open(log).read()[-4000:])


@pytest.fixture(scope="module")
def phoenix():
    if not os.path.exists(PHOENIX):
        if os.environ.get("ABI_REQUIRE_PHOENIX") == "1":
            pytest.fail(f"Phoenix not installed at {PHOENIX} (scripts/setup.sh --tests installs it)")
        pytest.skip(f"Phoenix not installed at {PHOENIX}: run scripts/setup.sh --tests")
    work = tempfile.mkdtemp(prefix="abi-phoenix-")
    port = _free_port()
    env = dict(os.environ,
               PHOENIX_PORT=str(port), PHOENIX_HOST="127.0.0.1",
               # Its gRPC receiver binds all interfaces; give it a free port we do not use.
               PHOENIX_GRPC_PORT=str(_free_port()),
               PHOENIX_WORKING_DIR=work)
    log = os.path.join(work, "phoenix.log")
    proc = subprocess.Popen([PHOENIX, "serve"], env=env, cwd=work,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/healthz", proc, "Phoenix", 180, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def traced_node(phoenix):
    yield from _node(phoenix)


def _node(phoenix, *extra):
    work = tempfile.mkdtemp(prefix="abi-traced-")
    http = f"127.0.0.1:{_free_port()}"
    args = [_node_bin(), "run", "--http", http, "--listen", f"127.0.0.1:{_free_port()}",
            "--data-dir", os.path.join(work, "data"), "--models-dir", MODELS,
            "--otlp-endpoint", phoenix + "/v1/traces", *extra]
    log = os.path.join(work, "node.log")
    proc = subprocess.Popen(args, cwd=work, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://{http}"
    try:
        _wait(url + "/health", proc, "abi-node", 120, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def _spans_of(phoenix, trace_id, want, seconds=30):
    """Phoenix's spans of `trace_id`, once at least `want` of them arrived."""
    deadline = time.time() + seconds
    found = []
    while time.time() < deadline:
        found, cursor = [], None
        while True:
            params = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            r = requests.get(f"{phoenix}/v1/projects/default/spans", params=params, timeout=10)
            r.raise_for_status()
            body = r.json()
            found += [s for s in body["data"] if s["context"]["trace_id"] == trace_id]
            cursor = body.get("next_cursor")
            if not cursor:
                break
        if len(found) >= want:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{len(found)} of {want} spans of trace {trace_id} arrived: {found}")


def _traceparent():
    trace_id = secrets.token_hex(16)
    parent = secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


def test_search_is_one_trace_over_gateway_manager_and_shards(phoenix, traced_node):
    base = traced_node
    r = requests.put(f"{base}/collections/traced",
                     json={"vectors": {"size": 3, "distance": "Cosine"}, "shard_number": 2}, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.put(f"{base}/collections/traced/points?wait=true", timeout=30, json={"points": [
        {"id": i, "vector": [1.0, float(i), 0.5]} for i in range(1, 9)]})
    assert r.status_code == 200, r.text

    trace_id, client_span, tp = _traceparent()
    r = requests.post(f"{base}/collections/traced/points/search", headers={"traceparent": tp},
                      json={"vector": [1.0, 2.0, 0.5], "limit": 3}, timeout=30)
    assert r.status_code == 200, r.text
    # The gateway answers the traceparent of its own span: same trace, new span id.
    assert r.headers["traceparent"].startswith(f"00-{trace_id}-")

    # http.request + vector manager + 2 shards.
    spans = _spans_of(phoenix, trace_id, want=4)
    by_id = {s["context"]["span_id"]: s for s in spans}
    http = [s for s in spans if s["name"] == "http.request"]
    assert len(http) == 1, spans
    http = http[0]
    assert http["parent_id"] == client_span
    assert http["attributes"]["http.route"] == "/collections/{name}/points/search"
    assert str(http["attributes"]["http.response.status_code"]) == "200"
    assert r.headers["traceparent"].split("-")[2] == http["context"]["span_id"]

    actors = [s for s in spans if s["name"] == "actor.handle"]
    manager = [s for s in actors if s["attributes"]["actor.path"].endswith("/vector/api")]
    assert len(manager) == 1, actors
    assert manager[0]["parent_id"] == http["context"]["span_id"]
    assert manager[0]["attributes"]["message_type"] == "vector.search"
    shards = [s for s in actors if "/vector/traced/shard-" in s["attributes"]["actor.path"]]
    assert sorted(s["attributes"]["actor.path"].rsplit("/", 1)[1] for s in shards) == ["shard-0", "shard-1"]
    for s in shards:
        assert s["parent_id"] == manager[0]["context"]["span_id"], s
        assert s["attributes"]["message_type"] == "vector.shard.search"
    # Every span's parent is in the trace, except the client's own span.
    for s in spans:
        assert s["parent_id"] in by_id or s["parent_id"] == client_span, s


def test_embeddings_trace_reaches_the_inference_pool(phoenix, traced_node):
    if not os.path.isdir(os.path.join(MODELS, "all-minilm-l6-v2")):
        pytest.skip("all-minilm-l6-v2 not fetched: run scripts/setup.sh --tests")
    trace_id, client_span, tp = _traceparent()
    r = requests.post(f"{traced_node}/v1/embeddings", headers={"traceparent": tp},
                      json={"model": "all-minilm-l6-v2", "input": "tracing through the pool"},
                      timeout=60)
    assert r.status_code == 200, r.text
    spans = _spans_of(phoenix, trace_id, want=2)
    http = next(s for s in spans if s["name"] == "http.request")
    assert http["parent_id"] == client_span
    pool = [s for s in spans if s["name"] == "actor.handle"
            and s["attributes"]["actor.path"].endswith("/inference/all-minilm-l6-v2")]
    assert len(pool) == 1, spans
    assert pool[0]["parent_id"] == http["context"]["span_id"]
    assert pool[0]["attributes"]["message_type"] == "inference.embed"


def test_sampling_is_decided_where_the_trace_starts(phoenix):
    """With sampling_ratio 0 a request without trace context is not traced at
    all, a caller's unsampled context is respected, and a caller's sampled
    context is still traced end to end."""
    gen = _node(phoenix, "--sampling-ratio", "0")
    base = next(gen)
    try:
        r = requests.get(base + "/v1/models", timeout=30)
        assert r.ok and "traceparent" not in r.headers
        trace_id, _, tp = _traceparent()
        r = requests.get(base + "/v1/models", headers={"traceparent": tp[:-2] + "00"}, timeout=30)
        assert r.ok and "traceparent" not in r.headers
        trace_id, client_span, tp = _traceparent()
        r = requests.get(base + "/v1/models", headers={"traceparent": tp}, timeout=30)
        assert r.ok and r.headers["traceparent"].startswith(f"00-{trace_id}-")
        # Every span this node exported belongs to the one sampled request
        # (the unsampled requests and the /metrics scrapes made none).
        deadline = time.time() + 20
        while True:
            text = requests.get(base + "/metrics", timeout=10).text
            vals = {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                    if l.startswith("abi_telemetry_spans_")}
            if vals["abi_telemetry_spans_exported_total"] >= 1 and vals["abi_telemetry_spans_queued"] == 0:
                break
            assert time.time() < deadline, vals
            time.sleep(0.3)
        exported = int(vals["abi_telemetry_spans_exported_total"])
        spans = _spans_of(phoenix, trace_id, want=exported)
        assert len(spans) == exported, (exported, spans)
        assert any(s["name"] == "http.request" and s["parent_id"] == client_span for s in spans)
        assert vals['abi_telemetry_spans_dropped_total{reason="queue_full"}'] == 0
        assert vals['abi_telemetry_spans_dropped_total{reason="export_failed"}'] == 0
    finally:
        gen.close()


def test_the_sampling_ratio_changes_without_a_restart(phoenix):
    """An operator turns tracing up and down through the admin API: the new ratio
    applies to the next request, bad ratios are refused with a JSON 400."""
    gen = _node(phoenix, "--sampling-ratio", "0")
    base = next(gen)
    url = base + "/v1/admin/telemetry/sampling"
    try:
        assert requests.get(url, timeout=10).json() == {"tracing": True, "sampling_ratio": 0.0}
        assert "traceparent" not in requests.get(base + "/v1/models", timeout=30).headers
        r = requests.put(url, json={"ratio": 1.0}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json() == {"tracing": True, "sampling_ratio": 1.0, "previous": 0.0}
        r = requests.get(base + "/v1/models", timeout=30)
        assert r.ok and r.headers["traceparent"].startswith("00-")
        for bad in ({"ratio": 1.5}, {"ratio": -0.1}, {"ratio": "all"}, {}):
            r = requests.put(url, json=bad, timeout=10)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"]["code"], r.text
        assert requests.get(url, timeout=10).json()["sampling_ratio"] == 1.0
        assert requests.put(url, json={"ratio": 0}, timeout=10).json()["previous"] == 1.0
        assert "traceparent" not in requests.get(base + "/v1/models", timeout=30).headers
    finally:
        gen.close()


def test_export_counters_in_metrics(phoenix, traced_node):
    requests.get(traced_node + "/health", timeout=10)
    deadline = time.time() + 20
    exported = 0.0
    while time.time() < deadline:
        text = requests.get(traced_node + "/metrics", timeout=10).text
        vals = {l.split(" ")[0]: float(l.split(" ")[1]) for l in text.splitlines()
                if l.startswith("abi_telemetry_spans_")}
        exported = vals.get("abi_telemetry_spans_exported_total", 0.0)
        if exported > 0:
            # Phoenix is up: nothing was dropped.
            assert vals['abi_telemetry_spans_dropped_total{reason="export_failed"}'] == 0.0
            assert vals['abi_telemetry_spans_dropped_total{reason="queue_full"}'] == 0.0
            return
        time.sleep(0.5)
    raise AssertionError(f"no span exported: {exported}")


def _cli(*args):
    r = subprocess.run([_node_bin(), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_remote_ask_continues_the_trace_on_the_other_node(phoenix):
    """n1's gateway asks n2's root supervisor over QUIC: the envelope carries
    the traceparent and n2's handler span is a child of n1's ask span."""
    work = tempfile.mkdtemp(prefix="abi-traced-cluster-")
    procs = []
    try:
        _cli("certs", "init", os.path.join(work, "ca"))
        quic = {n: _free_port() for n in ("n1", "n2")}
        http = {n: f"127.0.0.1:{_free_port()}" for n in ("n1", "n2")}
        config = os.path.join(work, "abi.toml")
        with open(config, "w") as f:
            f.write('[cluster]\nname = "t"\n\n[membership]\nheartbeat_ms = 200\nsuspect_ms = 600\ndead_ms = 1500\n')
        seeds = ",".join(f"127.0.0.1:{p}" for p in quic.values())
        for n in ("n1", "n2"):
            tls = os.path.join(work, n, "tls")
            _cli("certs", "issue", "--ca", os.path.join(work, "ca"), "--node", n, "--out", tls)
            log = os.path.join(work, f"{n}.log")
            procs.append((subprocess.Popen(
                [_node_bin(), "run", "--config", config, "--node-id", n,
                 "--listen", f"127.0.0.1:{quic[n]}", "--http", http[n],
                 "--data-dir", os.path.join(work, n, "data"), "--models-dir", MODELS,
                 "--tls-dir", tls, "--seeds", seeds,
                 "--otlp-endpoint", phoenix + "/v1/traces"],
                cwd=work, stdout=open(log, "wb"), stderr=subprocess.STDOUT), log))
        for (proc, log), n in zip(procs, ("n1", "n2")):
            _wait(f"http://{http[n]}/health", proc, n, 120, log)
        n1 = f"http://{http['n1']}"
        deadline = time.time() + 30
        while True:
            nodes = requests.get(n1 + "/v1/cluster/nodes", timeout=5).json().get("nodes", [])
            if any(x["id"] == "n2" and x["status"] == "alive" for x in nodes):
                break
            assert time.time() < deadline, nodes
            time.sleep(0.3)

        trace_id, client_span, tp = _traceparent()
        r = requests.get(n1 + "/v1/cluster/actors", params={"node": "n2"},
                         headers={"traceparent": tp}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "n2"

        # http.request, the membership lookup that checks n2 is a member, and the
        # remote tree ask on both sides.
        spans = _spans_of(phoenix, trace_id, want=4)
        http_span = next(s for s in spans if s["name"] == "http.request")
        assert http_span["parent_id"] == client_span
        member = [s for s in spans if s["name"] == "actor.handle"
                  and s["attributes"]["message_type"] == "membership.list_nodes"]
        assert len(member) == 1 and member[0]["parent_id"] == http_span["context"]["span_id"], spans
        handles = [s for s in spans if s["name"] == "actor.handle"
                   and s["attributes"]["message_type"] == "supervision.get_tree"]
        # The asking side (on n1) and the handling side (on n2), both naming n2's root.
        assert len(handles) == 2, spans
        client = next(s for s in handles if s["parent_id"] == http_span["context"]["span_id"])
        server = next(s for s in handles if s is not client)
        assert client["attributes"]["actor.path"].split("@")[0].split("/")[0] == "n2"
        assert client["attributes"]["remote"] in (True, "true", "True")
        assert server["parent_id"] == client["context"]["span_id"]
        assert server["attributes"]["message_type"] == client["attributes"]["message_type"]

        # Transport metrics on n1: one live connection, to n2, with traffic and an RTT.
        text = requests.get(n1 + "/metrics", timeout=10).text
        vals = {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                if l.startswith("abi_transport_")}
        assert vals["abi_transport_connections"] == 1, vals
        assert vals['abi_transport_sent_bytes_total{peer="n2"}'] > 0, vals
        assert vals['abi_transport_received_bytes_total{peer="n2"}'] > 0, vals
        assert 0 < vals['abi_transport_rtt_seconds{peer="n2"}'] < 1, vals
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
