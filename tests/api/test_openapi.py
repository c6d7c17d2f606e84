"""The OpenAPI schema is pinned: `docs/openapi.json` must equal what the app serves.

Regenerate it on purpose with `AISTACK_UPDATE_GOLDEN=1 scripts/test -k openapi` (never when
`CI` is set) and review the diff as an API change: clients are generated from this file.
"""

from __future__ import annotations

import json
from pathlib import Path

from scheduler_service.api import ApiSettings, create_app
from tests.api.support import FakeActions, FakeAuthorizer, FakeWebhooks, cluster_status
from tests.golden import compare

GOLDEN = Path(__file__).parents[2] / "docs" / "openapi.json"


def _schema_text() -> str:
    status = cluster_status()
    app = create_app(
        ApiSettings(),
        status=lambda: status,
        authorizer=FakeAuthorizer(),
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
    )
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"


def test_openapi_schema_matches_the_committed_one() -> None:
    compare(_schema_text(), GOLDEN)


def test_the_schema_does_not_depend_on_the_settings() -> None:
    status = cluster_status()
    local = create_app(
        ApiSettings(auth=False),
        status=lambda: status,
        authorizer=FakeAuthorizer(),
        webhooks=FakeWebhooks(),
        actions=FakeActions(),
    )

    assert json.dumps(local.openapi(), indent=2, ensure_ascii=False) + "\n" == _schema_text()


def test_every_api_operation_documents_its_errors_with_the_error_body() -> None:
    schema = json.loads(_schema_text())

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = [s for s in operation["responses"] if s.startswith(("4", "5"))]
            expected = {"401", "403", "503"} if path.startswith("/api/v1/") else {"400"}
            if "{" in path:
                expected |= {"404"}
            if operation.get("parameters"):
                expected |= {"422"}
            assert set(errors) == expected, (method, path)
            for status in errors:
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (
                    method,
                    path,
                    status,
                )
