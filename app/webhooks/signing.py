"""Standard Webhooks signing: a `whsec_` secret, and the headers that every attempt carries.

The signature is `v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`
under the secret's base64-decoded key, so the `standardwebhooks` package and the `openai`
SDK's `client.webhooks.unwrap` verify it as they are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# Standard Webhooks secrets start so; the rest is the base64 key.
PREFIX = "whsec_"
_KEY_BYTES = 32


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: the id stays the same across attempts, the time does not."""
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, message_id, timestamp, body),
            "content-type": "application/json"}
