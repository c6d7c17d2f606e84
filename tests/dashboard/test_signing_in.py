"""Who may see the dashboard: a token in the Authorization header or in the sign-in cookie.

The token is checked by the same `Authorizer` as the API's; rights are RBAC's (support.py's
table: admin everything; alice pods in team-a and queues; bob nothing).
"""

from __future__ import annotations

import pytest

from scheduler_service.dashboard import TOKEN_COOKIE, DashboardSettings
from tests.api.support import ADMIN_AUTH, ALICE_AUTH, BOB_AUTH, FakeAuthorizer, TestClient
from tests.dashboard.cluster import StatusHolder
from tests.dashboard.conftest import make_app
from tests.dashboard.html import parse

ORIGIN = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
"""What Chromium sends with the sign-in form (its Referrer-Policy hides nothing here)."""


def test_without_a_token_a_page_sends_the_browser_to_the_sign_in_form(client: TestClient) -> None:
    response = client.get("/ui/queues?pool=h100", follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fqueues%3Fpool%3Dh100"
    form = client.get(response.headers["location"])
    assert form.status_code == 200
    assert "kubectl create token" in form.text
    assert parse(form.text).one("input", name="next").attrs["value"] == "/ui/queues?pool=h100"


def test_the_sign_in_form_keeps_the_token_in_a_strict_http_only_secure_cookie(
    client: TestClient,
) -> None:
    response = client.post(
        "/ui/login",
        data={"token": "alice-token", "next": "/ui/workloads"},
        headers=ORIGIN,
        follow_redirects=False,
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/workloads"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}=alice-token;")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "secure", "path=/ui/"} <= flags
    page = client.get("/ui/workloads")
    assert page.status_code == 200
    assert parse(page.text).one(class_="user").text == "alice"


def test_a_token_the_api_server_refuses_is_told_so_on_the_form(client: TestClient) -> None:
    response = client.post("/ui/login", data={"token": "stolen", "next": "/ui/"}, headers=ORIGIN)

    assert response.status_code == 401
    assert "does not accept this token" in response.text
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "null"},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://other.testserver"},
    ],
)
def test_a_sign_in_posted_from_another_site_is_refused(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.post(
        "/ui/login", data={"token": "alice-token"}, headers=headers, follow_redirects=False
    )

    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_after_signing_in_only_a_page_of_the_dashboard_is_a_place_to_return_to(
    client: TestClient,
) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/nodes"):
        response = client.post(
            "/ui/login",
            data={"token": "alice-token", "next": target},
            headers=ORIGIN,
            follow_redirects=False,
        )
        assert response.headers["location"] == "/ui/", target


def test_signing_out_deletes_the_cookie(client: TestClient) -> None:
    client.cookies.set(TOKEN_COOKIE, "alice-token")

    response = client.post("/ui/logout", headers=ORIGIN, follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    assert response.headers["set-cookie"].startswith(f'{TOKEN_COOKIE}="";')


def test_an_authenticating_proxys_bearer_header_signs_every_page_in(client: TestClient) -> None:
    response = client.get("/ui/workloads", headers=ALICE_AUTH)

    assert response.status_code == 200
    assert parse(response.text).one(class_="user").text == "alice"


def test_the_header_wins_over_the_cookie(client: TestClient) -> None:
    client.cookies.set(TOKEN_COOKIE, "bob-token")

    response = client.get("/ui/workloads", headers=ADMIN_AUTH)

    assert parse(response.text).one(class_="user").text == "admin"


def test_a_page_the_user_has_no_right_to_says_which_right_is_missing(client: TestClient) -> None:
    response = client.get("/ui/nodes", headers=ALICE_AUTH)

    assert response.status_code == 403
    alert = parse(response.text).one(role="alert").text
    assert "alice may not list nodes cluster-wide" in alert
    assert "ClusterRoleBinding" in alert


def test_a_user_without_rights_sees_no_queue_numbers(client: TestClient) -> None:
    for path in ("/ui/", "/ui/queues"):
        response = client.get(path, headers=BOB_AUTH)
        assert response.status_code == 403
        assert "bob may not list queues.aistack.io" in response.text
        assert "data-pool" not in response.text


def test_when_the_api_server_cannot_be_asked_the_page_says_so(
    client: TestClient, authorizer: FakeAuthorizer
) -> None:
    authorizer.down = True

    response = client.get("/ui/", headers=ALICE_AUTH)

    assert response.status_code == 503
    assert "unreachable" in response.text


def test_without_authentication_every_page_is_open(
    holder: StatusHolder, authorizer: FakeAuthorizer
) -> None:
    with TestClient(make_app(holder, authorizer, auth=False)) as client:
        response = client.get("/ui/nodes")
        form = client.get("/ui/login")

    assert response.status_code == 200
    assert "no authentication" in response.text
    assert "without authentication" in form.text
    assert authorizer.questions == []


def test_the_secure_flag_can_be_dropped_for_a_plain_http_proxy(
    holder: StatusHolder, authorizer: FakeAuthorizer
) -> None:
    settings = DashboardSettings(secure_cookie=False)
    with TestClient(make_app(holder, authorizer, settings)) as client:
        response = client.post(
            "/ui/login",
            data={"token": "alice-token"},
            headers={"Origin": "http://testserver"},
            follow_redirects=False,
        )

    assert "secure" not in response.headers["set-cookie"].lower()
