"""Screenshots of every view for docs/dashboard.md: the demo cluster in Debian's Chromium.

Run by `scripts/dashboard-screenshots` (which writes docs/img/dashboard-*.png). The app is the
service's own (`create_app` with the dashboard) on the demo cluster of `demo.py` and its
fortnight of accounting records, served by uvicorn on a free loopback port; the browser sends
the demo user's token as an authenticating proxy would.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from scheduler_service.accounting import open_store
from scheduler_service.api import ApiSettings, Services, create_app
from scheduler_service.dashboard import DashboardSettings, create_dashboard
from tests.api.support import FakeActions, FakeWebhooks
from tests.browser import chromium
from tests.dashboard.demo import DEMO_TOKEN, DemoAuthorizer, demo_records, demo_status

VIEWS = {
    "overview": "/ui/",
    "queues": "/ui/queues",
    "nodes": "/ui/nodes?pool=a100",
    "workloads": "/ui/workloads",
    "workload": "/ui/workloads/vision/detr-finetune",
    "usage": "/ui/usage?since=14d&by=queue",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main(out: Path) -> int:
    """Write `out/dashboard-<view>.png` for every view; 0 on success."""
    now = time.time()
    status = demo_status(now)
    with tempfile.TemporaryDirectory() as scratch:
        store = open_store(f"sqlite:///{scratch}/accounting.db")
        demo_records(store, now)

        def dashboard(services: Services) -> object:
            settings = DashboardSettings(argo_ui_url="https://argo.example.com")
            return create_dashboard(settings, services)

        app = create_app(
            ApiSettings(),
            status=lambda: status,
            authorizer=DemoAuthorizer(),
            webhooks=FakeWebhooks(),
            actions=FakeActions(),
            dashboard=dashboard,  # type: ignore[arg-type]
            accounting=store,
        )
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            _shoot(f"http://127.0.0.1:{port}", out)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            store.close()
    return 0


def _shoot(base: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        context = browser.new_context(
            viewport={"width": 1360, "height": 860},
            extra_http_headers={"Authorization": f"Bearer {DEMO_TOKEN}"},
        )
        page = context.new_page()
        for name, path in VIEWS.items():
            page.goto(base + path)
            if name == "usage":  # a report: no event stream, its chart comes after it
                page.wait_for_selector("svg.chart", timeout=15_000)
            else:
                page.wait_for_selector("#live-state.on", timeout=15_000)
            page.wait_for_timeout(300)
            target = out / f"dashboard-{name}.png"
            page.screenshot(path=str(target), full_page=name not in {"nodes", "workloads"})
            print(f"wrote {target}")


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/img")))
