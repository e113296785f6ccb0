"""The dashboard of one node shows the whole cluster: two real abi-node processes
(QUIC with mutual TLS, a Raft metadata group), a replicated collection, and in real
headless Chromium the other node's supervision tree (with a working Restart button)
and the collection's replica placement."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import _free_port, _node_bin
from test_dashboard import ARTIFACTS, CHROMIUM


def _wait(url, proc, log, deadline=120):
    end = time.time() + deadline
    while time.time() < end:
        try:
            if requests.get(url + "/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError("abi-node did not start:\n" + open(log).read())


@pytest.fixture(scope="module")
def cluster():
    """Two nodes, both Raft voters; yields their gateway URLs."""
    work = tempfile.mkdtemp(prefix="abi-pytest-cluster-")
    bin_ = _node_bin()
    ca = os.path.join(work, "ca")
    subprocess.run([bin_, "certs", "init", ca], check=True, capture_output=True)
    ids = ["n1", "n2"]
    quic = {i: _free_port() for i in ids}
    http = {i: _free_port() for i in ids}
    seeds = ", ".join(f'"127.0.0.1:{quic[i]}"' for i in ids)
    toml = (f'[cluster]\nname = "dash"\ndiscovery = {{ kind = "static", seeds = [{seeds}] }}\n\n'
            "[membership]\nheartbeat_ms = 200\nsuspect_ms = 600\ndead_ms = 1500\n\n")
    for i in ids:
        toml += (f'[[nodes]]\nid = "{i}"\nlisten = "127.0.0.1:{quic[i]}"\n'
                 f'http = "127.0.0.1:{http[i]}"\ndata_dir = "{work}/{i}/data"\n\n')
    toml += '[raft]\nvoters = ["n1", "n2"]\n'
    config = os.path.join(work, "abi.toml")
    with open(config, "w") as f:
        f.write(toml)
    empty = os.path.join(work, "no-models")
    os.makedirs(empty)
    procs = []
    for i in ids:
        tls = os.path.join(work, i, "tls")
        subprocess.run([bin_, "certs", "issue", "--ca", ca, "--node", i, "--out", tls],
                       check=True, capture_output=True)
        log = os.path.join(work, f"{i}.log")
        proc = subprocess.Popen(
            [bin_, "run", "--config", config, "--node-id", i, "--tls-dir", tls,
             "--models-dir", empty],
            cwd=work, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        procs.append((proc, log))
    urls = [f"http://127.0.0.1:{http[i]}" for i in ids]
    try:
        for url, (proc, log) in zip(urls, procs):
            _wait(url, proc, log)
        yield urls
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def test_dashboard_shows_every_node_and_replica_placement(cluster):
    from playwright.sync_api import sync_playwright

    n1, n2 = cluster
    # Both members alive and a Raft leader elected before the collection is placed.
    end = time.time() + 60
    while time.time() < end:
        nodes = requests.get(n1 + "/v1/cluster/nodes", timeout=5).json().get("nodes", [])
        raft = requests.get(n1 + "/v1/cluster/raft", timeout=5)
        if sum(n["status"] == "alive" for n in nodes) == 2 and raft.ok and raft.json().get("leader"):
            break
        time.sleep(0.3)
    r = requests.put(n2 + "/collections/replicated_docs", timeout=60, json={
        "vectors": {"size": 4, "distance": "Dot"}, "shard_number": 2, "replication_factor": 2})
    assert r.ok, r.text
    requests.put(n1 + "/collections/replicated_docs/points?wait=true", timeout=30, json={
        "points": [{"id": i, "vector": [1.0, i, 0.0, 1.0]} for i in range(1, 8)]}).raise_for_status()
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(n1 + "/dashboard")
        # n2's tree, fetched through the cluster, next to n1's own.
        remote = page.locator('tr[data-path="n2/vector"]')
        remote.wait_for(timeout=20000)
        page.locator('tr[data-path="n1/vector"]').wait_for(timeout=5000)
        # The replicated collection with its placement: both shards on both nodes.
        row = page.locator("#collections tr", has_text="replicated_docs")
        row.wait_for(timeout=20000)
        page.wait_for_function(
            """() => {
                const r = [...document.querySelectorAll('#collections tr')]
                    .find((t) => t.textContent.includes('replicated_docs'));
                return r && r.textContent.includes('shard 1') && r.textContent.includes('n2');
            }""", timeout=20000)
        assert "7" in row.inner_text()
        # Restart an actor of the other node from this node's dashboard.
        target = "n2/gateway"
        before = int(page.locator(f'tr[data-path="{target}"] td.restarts').inner_text())
        page.locator(f'button[data-action="restart"][data-path="{target}"]').click()
        page.wait_for_function(
            """([path, before]) => {
                const r = document.querySelector(`tr[data-path="${path}"] td.restarts`);
                return r && parseInt(r.textContent) > before;
            }""",
            arg=[target, before],
            timeout=30000,
        )
        page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-cluster.png"), full_page=True)
        browser.close()
