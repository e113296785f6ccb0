"""Devices and compute through the gateway: the cpu plugin and Mesa's lavapipe
(wgpu) both listed, and both compute correct results."""
import numpy as np
import requests


def test_devices_list_cpu_and_lavapipe(abi_http):
    devs = requests.get(abi_http + "/v1/devices", timeout=30).json()["devices"]
    backends = {d["backend"] for d in devs}
    assert "cpu" in backends, devs
    assert "wgpu" in backends, devs
    for d in devs:
        for key in ("backend", "id", "name", "kind", "memory_total"):
            assert key in d, d


def test_matmul_on_each_backend_and_fallback(abi_http):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal((5, 4)).astype(np.float32)
    for backend in ("cpu", "wgpu"):
        r = requests.post(abi_http + "/v1/compute/matmul",
                          json={"backend": backend, "a": a.tolist(), "b": b.tolist()}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["backend"] == backend
        np.testing.assert_allclose(np.array(body["result"]), a @ b, rtol=1e-4, atol=1e-4)
    r = requests.post(abi_http + "/v1/compute/vector_add",
                      json={"backend": "no-such-backend", "a": [1, 2, 3], "b": [10, 20, 30]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["backend"] == "cpu"
    assert r.json()["result"] == [11, 22, 33]


def test_bad_compute_input_is_a_json_4xx(abi_http):
    r = requests.post(abi_http + "/v1/compute/matmul", json={"a": [[1, 2]], "b": [[1, 2]]}, timeout=30)
    assert 400 <= r.status_code < 500
    assert "error" in r.json()
