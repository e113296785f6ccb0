"""A real Prometheus (Debian's package) scrapes the node, and promtool accepts
the exposition."""
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

import requests

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
