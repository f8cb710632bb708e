"""The API key format: `ftk_` + an 8-character public id + a 40-character secret.

The readable start makes a leaked key recognisable in logs and by secret scanners, and the
first 12 characters (the prefix) name the key in listings without revealing it. The secret
carries about 238 random bits, so a plain sha256 is enough to store it: nothing can be
guessed that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string

KEY_START = "ftk_"
PREFIX_LENGTH = len(KEY_START) + 8
_ALPHABET = string.ascii_letters + string.digits
KEY_PATTERN = re.compile(rf"^{KEY_START}[A-Za-z0-9]{{48}}$")


def new_key() -> str:
    return KEY_START + "".join(secrets.choice(_ALPHABET) for _ in range(48))


def prefix_of(key: str) -> str:
    return key[:PREFIX_LENGTH]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(key: str, stored_digest: str) -> bool:
    return secrets.compare_digest(digest(key), stored_digest)
