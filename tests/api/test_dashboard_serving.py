"""The dashboard's files as the API serves them: security headers, no inline script, no
database work, and the cross-site guard on every state-changing request."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.dashboard.router import STATIC

STATIC_FILES = sorted(path.relative_to(STATIC).as_posix()
                      for path in STATIC.rglob("*") if path.is_file())
SCRIPTS = [path for path in STATIC_FILES if path.endswith(".js") and "vendor/" not in path]


def test_the_dashboard_page_is_served_with_a_strict_policy(api: TestClient) -> None:
    redirected = api.get("/ui", follow_redirects=False)
    assert redirected.status_code == 307 and redirected.headers["location"] == "/ui/"
    page = api.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", STATIC_FILES)
def test_every_file_is_served_with_the_same_headers(api: TestClient, path: str) -> None:
    answer = api.get(f"/ui/static/{path}")
    assert answer.status_code == 200
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_icon_browsers_ask_every_page_for_is_there(api: TestClient) -> None:
    icon = api.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"


def test_a_missing_file_is_a_404_in_the_error_shape(api: TestClient) -> None:
    answer = api.get("/ui/static/js/nothing.js")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        self.inline_script |= self._in_script and bool(data.strip())

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_the_page_has_no_inline_script_or_style() -> None:
    parsed = _Tags()
    parsed.feed((STATIC / "index.html").read_text())
    assert not parsed.inline_script
    for tag, attrs in parsed.tags:
        assert "style" not in attrs and not any(name.startswith("on") for name in attrs), tag
        if tag == "script":
            assert attrs.get("src", "").startswith("static/"), attrs
    assert (STATIC / "vendor" / "uplot" / "LICENSE").read_text().startswith("The MIT License")


@pytest.mark.parametrize("path", SCRIPTS)
def test_no_script_parses_strings_as_html_or_code(path: str) -> None:
    """Everything user-provided is rendered as text: the scripts build nodes, never markup."""
    source = (STATIC / path).read_text()
    for sink in (r"\.innerHTML\b", r"\.outerHTML\b", r"insertAdjacentHTML", r"document\.write",
                 r"\beval\(", r"new Function\(", r"setAttribute\(\s*[\"']on",
                 r"https?://"):
        assert not re.search(sink, source), f"{path} uses {sink}"


def test_the_dashboard_does_no_database_work(api: TestClient) -> None:
    statements: list[str] = []
    engine = api.app.state.engine  # type: ignore[attr-defined]

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for path in ("/ui/", "/ui/static/js/app.js", "/ui/static/css/app.css"):
            assert api.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "https://elsewhere.example"},
])
def test_a_state_change_from_another_site_is_refused(api: TestClient,
                                                     headers: dict[str, str]) -> None:
    for method, path in (("POST", "/v1/jobs"), ("POST", "/v1/jobs/job_x/cancel"),
                         ("DELETE", "/v1/datasets/ds_x"), ("POST", "/v1/fine_tuning/jobs")):
        answer = api.request(method, path, headers=headers, json={})
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "cross_site_request"


@pytest.mark.parametrize("headers", [
    {},  # curl, the SDKs: no browser headers at all
    {"Sec-Fetch-Site": "same-origin"},  # the dashboard itself
    {"Origin": "http://testserver"},  # an older browser on the same origin
    {"Sec-Fetch-Site": "none"},  # typed into the address bar
])
def test_requests_of_the_same_origin_and_of_clients_pass(api: TestClient,
                                                         headers: dict[str, str]) -> None:
    answer = api.post("/v1/jobs", headers=headers, json={})
    assert answer.status_code == 422 and answer.json()["error"]["code"] != "cross_site_request"


def test_reading_from_another_site_is_left_to_the_key(api: TestClient) -> None:
    """A GET changes nothing; without the key another site's page gets nothing anyway."""
    assert api.get("/v1/jobs", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200

