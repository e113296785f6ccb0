"""Starts one real abi-node for the Python client tests (or uses $ABI_HTTP).

The node runs the embedded single-node default on free loopback ports with a
fresh data dir and the models fetched by scripts/setup.sh. Tests read the
gateway URL from the `abi_http` fixture or the ABI_HTTP environment variable.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_bin():
    if os.environ.get("ABI_NODE_BIN"):
        return os.environ["ABI_NODE_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for profile in ("release", "debug"):
        p = os.path.join(target, profile, "abi-node")
        if os.path.exists(p):
            return p
    raise RuntimeError("abi-node binary not found: build it or set ABI_NODE_BIN")


@pytest.fixture(scope="session")
def abi_http():
    if os.environ.get("ABI_HTTP"):
        yield os.environ["ABI_HTTP"]
        return
    work = tempfile.mkdtemp(prefix="abi-pytest-")
    http = f"127.0.0.1:{_free_port()}"
    quic = f"127.0.0.1:{_free_port()}"
    args = [_node_bin(), "run", "--http", http, "--listen", quic,
            "--data-dir", os.path.join(work, "data")]
    extra = os.environ.get("ABI_NODE_ARGS", "")
    args += extra.split() if extra else []
    log = open(os.path.join(work, "node.log"), "wb")
    proc = subprocess.Popen(args, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{http}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.close()
            raise RuntimeError("abi-node did not start:\n" + open(os.path.join(work, "node.log")).read())
        time.sleep(0.2)
    os.environ["ABI_HTTP"] = url
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(work, ignore_errors=True)
