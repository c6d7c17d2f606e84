"""Debian's Chromium driven by Playwright for Python, as the dashboard's browser tests use it.

`/usr/bin/chromium` is installed by scripts/system-packages; `playwright install` is never run.
Screenshots are left in `out/dashboard/` for a person to look at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

__all__ = ["LIVE_MS", "Console", "chromium", "screenshot"]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "out" / "dashboard"
# Flags for a headless Chromium on a machine without a network: no sandbox inside the test
# container, no GPU, and none of the background fetches that would fill the closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE_MS = 20_000
"""How long Playwright waits for a live page to change by itself (ms)."""


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """The system's Chromium, headless; fails the test (never skips) when it is missing."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/system-packages (apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Console:
    """What a page wrote to its console as errors, and the exceptions it threw."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url', '')})")


def screenshot(page: Page, name: str) -> None:
    """The whole page, as `out/dashboard/<name>.png`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
