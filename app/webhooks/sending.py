"""One attempt at a webhook: a signed POST to the checked address, its outcome recorded.

Redirects are not followed (a redirect could lead anywhere, past the address check), at most
the start of the answer is read, and the whole attempt is bounded by the timeout.
"""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass

import certifi
import httpx

from app.webhooks import signing
from app.webhooks.destinations import (
    Destination,
    DisallowedUrl,
    InvalidUrl,
    IPAddress,
    Policy,
    UnresolvedHost,
    resolve,
)

USER_AGENT = "finetune-webhooks/1"
_RESPONSE_EXCERPT_BYTES = 1024


@dataclass(frozen=True)
class Outcome:
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def new_client(timeout_seconds: float) -> httpx.Client:
    # No connection kept between attempts: a connection is made for one checked address and
    # one TLS name, and must not serve another URL that resolves to the same address. No
    # proxy from the environment either (it would connect by name, past the check); a private
    # CA for receivers inside the company is trusted through SSL_CERT_FILE.
    trusted = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE")
                                         or certifi.where())
    return httpx.Client(timeout=timeout_seconds, follow_redirects=False, trust_env=False,
                        verify=trusted, limits=httpx.Limits(max_keepalive_connections=0),
                        headers={"user-agent": USER_AGENT})


def send(client: httpx.Client, policy: Policy, url: str, message_id: str, secret: str,
         body: bytes, timeout_seconds: float) -> Outcome:
    """POST `body` to `url`, signed, if its host still resolves to allowed addresses."""
    started = time.monotonic()
    try:
        destination = resolve(url, policy)
    except (InvalidUrl, DisallowedUrl, UnresolvedHost) as error:
        return Outcome(_since(started), error=f"not sent: {error}")
    headers = signing.signed_headers(secret, message_id, int(time.time()), body)
    failure = ""
    for address in destination.addresses:
        try:
            return _post(client, destination, address, headers, body, started,
                         timeout_seconds)
        except httpx.ConnectError as error:  # the name's next address may answer
            failure = f"ConnectError: {error}"
        except httpx.TimeoutException:
            return Outcome(_since(started), error=f"no answer within {timeout_seconds:g} s")
        except httpx.HTTPError as error:
            return Outcome(_since(started), error=f"{type(error).__name__}: {error}")
    return Outcome(_since(started), error=failure)


def _post(client: httpx.Client, destination: Destination, address: IPAddress,
          headers: dict[str, str], body: bytes, started: float,
          timeout_seconds: float) -> Outcome:
    extensions = {"sni_hostname": destination.hostname} if destination.scheme == "https" else {}
    with client.stream("POST", destination.pinned_url(address), content=body,
                       headers={**headers, "host": destination.host},
                       extensions=extensions) as response:
        excerpt = b""
        for chunk in response.iter_bytes():
            excerpt += chunk
            if (len(excerpt) >= _RESPONSE_EXCERPT_BYTES
                    or time.monotonic() - started > timeout_seconds):
                break
        text = excerpt[:_RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace") or None
        error = None
        if response.is_redirect:
            error = (f"redirect to {response.headers.get('location')} not followed: register "
                     "the URL it points to")
        return Outcome(_since(started), response.status_code, error, text)


def _since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
