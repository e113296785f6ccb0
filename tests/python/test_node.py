"""The node as an HTTP client sees it: health, the supervision tree, errors."""
import requests


def test_health_and_tree(abi_http):
    h = requests.get(abi_http + "/health", timeout=10).json()
    assert h["status"] == "ok"
    tree = requests.get(abi_http + "/v1/cluster/actors", timeout=10).json()
    paths = []

    def walk(t):
        paths.append(t["path"])
        for c in t["children"]:
            walk(c)

    walk(tree)
    assert any(p.endswith("/gateway") for p in paths), paths


def test_unknown_route_is_json_404(abi_http):
    r = requests.get(abi_http + "/definitely/not/here", timeout=10)
    assert r.status_code == 404
    body = r.json()
    assert set(body["error"]) == {"code", "message"}


def test_sampling_cannot_change_while_tracing_is_off(abi_http):
    url = abi_http + "/v1/admin/telemetry/sampling"
    assert requests.get(url, timeout=10).json() == {"tracing": False, "sampling_ratio": None}
    r = requests.put(url, json={"ratio": 0.5}, timeout=10)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "tracing_off"
