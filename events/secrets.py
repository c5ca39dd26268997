"""Webhook signing secrets: made as the Standard Webhooks specification defines them (`whsec_` +
base64 of 32 random bytes), stored encrypted, so that a database dump alone does not reveal one.

The keys are WEBHOOK_SECRET_KEYS (any strings; each is made a Fernet key by SHA-256): the first
encrypts, every one decrypts, so a key is rotated by putting a new one first and keeping the old
one as long as secrets it encrypted are stored (`reencrypt` moves one to the first key; rotating
an endpoint's secret also does). Without any, one key is derived from
SECRET_KEY (with a label of its own, so it is no other use's key): the secrets are then as safe as
SECRET_KEY, which a database dump does not hold either.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

PREFIX = "whsec_"
_DERIVED_LABEL = "billing.events.webhook-secret-key:"


class SecretUnreadable(Exception):
    """The stored secret was encrypted with a key that is no longer configured."""


def new_secret() -> str:
    """A new signing secret: `whsec_` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The HMAC key a secret stands for: the bytes its base64 part encodes."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def _fernet_key(key: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(key)) for key in keys])


def _keys() -> tuple[str, ...]:
    configured = tuple(key for key in settings.WEBHOOK_SECRET_KEYS if key)
    return configured or (_DERIVED_LABEL + settings.SECRET_KEY,)


def encrypt(secret: str) -> str:
    """`secret` as it is stored: a Fernet token (AES-CBC and HMAC) under the first key."""
    return _fernet(_keys()).encrypt(secret.encode()).decode("ascii")


def decrypt(stored: str) -> str:
    """The secret a stored value holds (any configured key may have encrypted it)."""
    try:
        return _fernet(_keys()).decrypt(stored.encode("ascii")).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "A webhook secret cannot be decrypted with WEBHOOK_SECRET_KEYS (a key removed too soon?)."
        ) from None


def reencrypt(stored: str) -> str:
    """A stored value encrypted again under the first key (the secret itself unchanged)."""
    return _fernet(_keys()).rotate(stored.encode("ascii")).decode("ascii")
