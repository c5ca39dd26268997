"""Time-ordered identifiers: `evt_` + 26 characters of Crockford base32 — 48 bits of milliseconds
since the epoch, then 80 random bits (the ULID layout) — so ids sort as their events were made, to
the millisecond, and a cursor can page on the id alone."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O, U


def _base32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def time_ordered(prefix: str, *, now_ms: int | None = None) -> str:
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return f"{prefix}{_base32(ms, 10)}{_base32(secrets.randbits(80), 16)}"


def event_id(*, now_ms: int | None = None) -> str:
    return time_ordered("evt_", now_ms=now_ms)
