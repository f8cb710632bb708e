"""/ui: the dashboard's files, sent with headers that keep user data inert.

The pages are static; every datum comes from the JSON API, called from the browser with the
key the person signed in with (kept in the tab's sessionStorage). Nothing here touches the
database, so the dashboard adds no work to the API's requests. The Content-Security-Policy
allows scripts, styles and connections from this origin only, and no inline script: a
dataset named like markup can at worst show as text.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # A new release's files must reach the browser at once; they are small.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/ui")
def dashboard_root() -> RedirectResponse:
    return RedirectResponse("/ui/", headers=SECURITY_HEADERS)


@router.get("/ui/")
def dashboard_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """Browsers ask for it on every page of the origin, /docs and JSON answers included."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml",
                        headers=SECURITY_HEADERS)


class _StaticFiles(StaticFiles):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A mount names no route in the scope; the metrics label every file by this one.
        scope["route"] = static_route

        async def send_with_headers(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *(
                    (name.lower().encode(), value.encode())
                    for name, value in SECURITY_HEADERS.items())]
            await send(message)
        await super().__call__(scope, receive, send_with_headers)


static_route = Mount("/ui/static", app=_StaticFiles(directory=STATIC), name="dashboard_files")
