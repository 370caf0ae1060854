"""Secrets, keys and codes: generation, hashing and comparison.

Keys and invite codes are stored only as HMAC-SHA256 under the deployment's HMAC secret, so a
copy of the database alone authenticates nobody. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_BYTES = 32  # 256 bits
INVITE_CODE_BYTES = 18  # 144 bits; 24 URL-safe characters like the original
KEY_PREFIX_LEN = 8


def hmac_hash(secret: str, value: str) -> str:
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def new_api_key() -> str:
    return secrets.token_urlsafe(API_KEY_BYTES)


def new_invite_code() -> str:
    return secrets.token_urlsafe(INVITE_CODE_BYTES)


def is_well_formed_token(token: str) -> bool:
    """Printable ASCII only, no spaces: anything else can never be a key, code or admin token.

    This closes the original server's hole where `Bearer \\xa0` stripped down to "" and matched
    an empty ADMIN_TOKEN.
    """
    return bool(token) and all(0x21 <= ord(char) <= 0x7E for char in token)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality that also hides the expected length (both sides hashed first)."""
    if not is_well_formed_token(given) or not is_well_formed_token(expected):
        return False
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )
