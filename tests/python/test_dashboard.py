"""The supervisor dashboard in a real headless Chromium (Debian's package),
driven with Playwright: find the tree, click Restart, see the count go up."""
import os
import shutil
import threading

import requests

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "..", "test-artifacts")


def test_dashboard_restart_button_raises_restart_count(abi_http):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "chromium is installed by scripts/setup.sh --tests"
    node = requests.get(abi_http + "/health", timeout=10).json()["node"]
    target = f"{node}/gateway"
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        # Something for the side panels to show: a collection with points.
        r = requests.put(f"{abi_http}/collections/dashboard_docs", timeout=30,
                         json={"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 2})
        assert r.ok, r.text
        requests.put(f"{abi_http}/collections/dashboard_docs/points?wait=true", timeout=30, json={
            "points": [{"id": i, "vector": [1.0, i, 0.0, 1.0]} for i in range(1, 6)]}).raise_for_status()
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(abi_http + "/dashboard")
        row = page.locator(f'tr[data-path="{target}"]')
        row.wait_for(timeout=15000)
        page.locator("#collections td", has_text="dashboard_docs").wait_for(timeout=15000)
        assert "5" in page.locator("#collections tr", has_text="dashboard_docs").inner_text()
        page.locator("#nodes td", has_text=node).wait_for(timeout=15000)
        # This node has no [raft]: the Raft panel stays hidden rather than empty.
        assert page.locator("#raft-card").is_hidden()
        # Tokens/s is derived from the stream: generate some while the page watches.
        chat = threading.Thread(target=lambda: requests.post(f"{abi_http}/v1/chat/completions", timeout=120, json={
            "model": "smollm2-135m-instruct", "max_tokens": 48,
            "messages": [{"role": "user", "content": "Tell me about actors."}]}))
        chat.start()
        page.wait_for_function("() => tokenHistory.some((v) => v > 0)", timeout=60000)
        chat.join()
        before = int(row.locator("td.restarts").inner_text())
        page.locator(f'button[data-action="restart"][data-path="{target}"]').click()
        # The page keeps streaming through the restart (SSE reconnects).
        page.wait_for_function(
            """([path, before]) => {
                const r = document.querySelector(`tr[data-path="${path}"] td.restarts`);
                return r && parseInt(r.textContent) > before;
            }""",
            arg=[target, before],
            timeout=20000,
        )
        page.wait_for_selector("#conn.ok", timeout=10000)
        page.screenshot(path=os.path.join(ARTIFACTS, "dashboard.png"), full_page=True)
        browser.close()
    tree = requests.get(abi_http + "/v1/cluster/actors", timeout=10).json()
    gw = [c for c in tree["children"] if c["path"] == target][0]
    assert gw["restarts"] > before


def test_metrics_exposition(abi_http):
    requests.get(abi_http + "/health", timeout=10)
    text = requests.get(abi_http + "/metrics", timeout=10).text
    assert 'abi_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert "abi_actor_up" in text
    om = requests.get(abi_http + "/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=10).text
    assert om.rstrip().endswith("# EOF")
    assert "# TYPE abi_http_requests_total counter" in text
