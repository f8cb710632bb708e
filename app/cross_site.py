"""Refuses state-changing requests that a browser sends on behalf of another site.

API keys travel in a header that another site's page cannot set, so a signed-in dashboard tab
is no handle for forgery. A server with authentication off (loopback only) has no such
guard: any page the person opens could POST to it from their browser. Browsers say where a
request comes from (`Sec-Fetch-Site`, or `Origin` for older ones); curl, SDKs and servers
send neither, so they pass unchanged.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_ORIGIN = frozenset({b"same-origin", b"none"})


class CrossSiteGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS \
                and is_cross_site(scope["headers"]):
            error = Forbidden("a page of another site cannot change anything here; send the "
                              "request from the dashboard itself or from a client without a "
                              "browser's Origin header", code="cross_site_request")
            await JSONResponse(error.body(), status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def is_cross_site(raw_headers: list[tuple[bytes, bytes]]) -> bool:
    headers = dict(raw_headers)
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        return site not in _SAME_ORIGIN
    origin = headers.get(b"origin")
    if origin is None:
        return False
    return urlsplit(origin.decode("latin-1")).netloc != headers.get(b"host", b"").decode(
        "latin-1")
