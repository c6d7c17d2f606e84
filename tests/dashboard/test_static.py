"""The vendored client files: exactly the pinned releases, served by the service itself."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

import scheduler_service.dashboard
from tests.api.support import TestClient

STATIC = Path(scheduler_service.dashboard.__file__).parent / "static"

PINNED = {
    "htmx.min.js": (
        "htmx.org",
        "2.0.11",
        "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
    ),
    "sse.min.js": (
        "htmx-ext-sse",
        "2.2.4",
        "98a46496de0c3605fbffdce9167ba427bdd9553184f83f149c261891a92c0136",
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_vendored_file_is_the_pinned_release(name: str) -> None:
    package, version, sha256 = PINNED[name]

    assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == sha256
    row = next(
        line for line in (STATIC / "VENDORED.md").read_text().splitlines() if f"`{name}`" in line
    )
    assert f"`{package}` | {version} |" in row
    assert sha256 in row


def test_every_script_the_pages_load_is_the_services_own(client: TestClient) -> None:
    templates = (STATIC.parent / "templates").glob("*.html")
    sources = {src for path in templates for src in re.findall(r'src="([^"]+)"', path.read_text())}

    assert sources == {
        "{{ links.static('htmx.min.js') }}",
        "{{ links.static('sse.min.js') }}",
        "{{ links.static('dashboard.js') }}",
    }
    for name in ("htmx.min.js", "sse.min.js", "dashboard.js", "dashboard.css", "favicon.svg"):
        response = client.get(f"/ui/static/{name}")
        assert response.status_code == 200, name
        assert response.content == (STATIC / name).read_bytes()
        assert "no-store" not in response.headers.get("cache-control", "")
