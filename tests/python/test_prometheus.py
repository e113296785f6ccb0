"""A real Prometheus (Debian's package) scrapes the node, and promtool accepts
the exposition."""
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse

import requests

from conftest import _free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def test_promtool_accepts_metrics(abi_http):
    requests.get(abi_http + "/health", timeout=10)
    text = requests.get(abi_http + "/metrics", timeout=10).text
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    # promtool exits 0 when clean; lint warnings are printed but still exit 0.
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_scrapes_the_node(abi_http):
    target = urllib.parse.urlparse(abi_http).netloc
    work = tempfile.mkdtemp(prefix="abi-prom-")
    port = _free_port()
    cfg = os.path.join(work, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: abi\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
    log = open(os.path.join(work, "prom.log"), "wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={work}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"
        deadline = time.time() + 60
        seen = None
        while time.time() < deadline:
            try:
                r = requests.get(api, params={"query": 'abi_actor_up{job="abi"}'}, timeout=5).json()
                if r.get("status") == "success" and r["data"]["result"]:
                    seen = r["data"]["result"]
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        assert seen, "prometheus never stored abi_actor_up:\n" + open(os.path.join(work, "prom.log")).read()[-2000:]
        assert any(s["metric"].get("path", "").endswith("/gateway") for s in seen)
        up = requests.get(api, params={"query": 'up{job="abi"}'}, timeout=5).json()
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _samples(text):
    """{(name, frozenset(labels)): value} of an exposition."""
    import re
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def _sum(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_subsystem_metrics_follow_the_work(abi_http):
    """Vector, inference and per-actor series move with real requests, and
    promtool still accepts the whole exposition."""
    c = "metrics_probe"
    r = requests.put(f"{abi_http}/collections/{c}", timeout=30,
                     json={"vectors": {"size": 3, "distance": "Cosine"}, "shard_number": 2})
    assert r.status_code == 200, r.text
    pts = [{"id": i, "vector": [1.0, float(i), 0.0]} for i in range(1, 4)]
    assert requests.put(f"{abi_http}/collections/{c}/points?wait=true", json={"points": pts}, timeout=30).ok
    # Replacing a point leaves a tombstone in its shard.
    assert requests.put(f"{abi_http}/collections/{c}/points?wait=true", timeout=30,
                        json={"points": [{"id": 1, "vector": [0.0, 1.0, 1.0]}]}).ok
    r = requests.post(f"{abi_http}/collections/{c}/points/search", json={"vector": [1, 1, 0], "limit": 2}, timeout=30)
    assert r.ok, r.text
    r = requests.post(f"{abi_http}/v1/embeddings", timeout=60,
                      json={"model": "all-minilm-l6-v2", "input": ["one", "two", "three"]})
    assert r.ok, r.text
    r = requests.post(f"{abi_http}/v1/chat/completions", timeout=120, json={
        "model": "smollm2-135m-instruct", "max_tokens": 4,
        "messages": [{"role": "user", "content": "Say hello"}]})
    assert r.ok, r.text
    generated = r.json()["usage"]["completion_tokens"]

    text = requests.get(abi_http + "/metrics", timeout=10).text
    s = _samples(text)
    assert _sum(s, "abi_vector_upserted_points_total", collection=c) == 4
    assert _sum(s, "abi_vector_searches_total", collection=c) == 2  # one query, fanned out to 2 shards
    assert _sum(s, "abi_vector_tombstones", collection=c) >= 1
    assert _sum(s, "abi_vector_wal_sync_duration_seconds_count", collection=c) >= 2
    assert _sum(s, "abi_inference_batch_size_sum", model="all-minilm-l6-v2") >= 3
    assert _sum(s, "abi_inference_generated_tokens_total", model="smollm2-135m-instruct") >= generated > 0
    assert ("abi_inference_queue_depth", frozenset({("model", "all-minilm-l6-v2")})) in s
    api = [k for k in s if k[0] == "abi_actor_messages_total" and dict(k[1])["path"].endswith("/vector/api")]
    assert api and s[api[0]] >= 4
    assert _sum(s, "abi_actor_request_duration_seconds_count") > 0
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
