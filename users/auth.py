import re
from hmac import compare_digest

from django.db.models import F, Q
from django.utils import timezone
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.settings import CONSTANTS
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from billing.db import CompiledQuery
from users.models import ApiKey, hash_api_key


def _api_key_by_prefix(prefix: str):
    """The key with its organization, as `.first()` reads it (its ordering, one row)."""
    return ApiKey.objects.select_related("organization").filter(prefix=prefix)[:1]


def _member_tokens(token_key: str):
    """The tokens of that key with their user, membership and organization."""
    return (
        get_token_model()
        .objects.select_related("user", "membership__organization")
        .filter(token_key=token_key)
    )


def _member_tokens_listing_organizations(token_key: str):
    """`_member_tokens`, each token's row once for every membership of its user, with that
    membership's organization id and name and its role, in the order joined (`Membership.Meta`):
    `/api/me/` authenticates and lists the caller's organizations in one query."""
    return (
        _member_tokens(token_key)
        .annotate(
            listed_organization_id=F("user__memberships__organization_id"),
            listed_organization_name=F("user__memberships__organization__name"),
            listed_role=F("user__memberships__role"),
        )
        .order_by("pk", "user__memberships__created_at", "user__memberships__id")
    )


# Every request reads its credential: the read is compiled once (billing.db.CompiledQuery).
_API_KEY = CompiledQuery(_api_key_by_prefix, prefix=str)
_MEMBER_TOKENS = CompiledQuery(_member_tokens, token_key=str)
_MEMBER_TOKENS_LISTING = CompiledQuery(_member_tokens_listing_organizations, token_key=str)

# The schemes a key may be sent with, lower-cased (a scheme is case-insensitive, RFC 9110).
SCHEMES = (b"token", b"bearer")
VISIBLE_ASCII = re.compile(rb"[!-~]+")
MALFORMED_HEADER = 'Authorization header must be "Token <key>" or "Bearer <key>"'
INVALID = "Invalid token."


def credential_from_header(request) -> str | None:
    """The key of `Authorization: Token <key>` or `Bearer <key>`; None when there is no header.

    This is the only authentication of the API, so a header in any other form is refused with a
    401 that says what is wrong, rather than passed on as "no credentials"; only a missing (or
    empty) header is that. A key with a character no key has is a 401, not a crash.
    """
    try:
        parts = get_authorization_header(request).split()
    except UnicodeEncodeError:  # beyond Latin-1: no server hands such a header on, a test client can
        raise exceptions.AuthenticationFailed(INVALID) from None
    if not parts:
        return None
    scheme = parts[0].lower()
    if len(parts) == 1:
        missing = "the key is missing" if scheme in SCHEMES else 'the "Token" or "Bearer" prefix is missing'
        raise exceptions.AuthenticationFailed(f"{MALFORMED_HEADER}: {missing}.")
    if scheme not in SCHEMES:
        raise exceptions.AuthenticationFailed(f'{MALFORMED_HEADER}: the scheme is not "Token" or "Bearer".')
    if len(parts) > 2:
        raise exceptions.AuthenticationFailed(f"{MALFORMED_HEADER}: a key has no spaces.")
    key = parts[1]
    # Every key this API issues is visible ASCII (a knox token is hex, an API key `sk_` and
    # URL-safe base64). Anything else cannot match, and is refused before it reaches a query:
    # PostgreSQL cannot take a NUL in a string parameter at all (a 500, not a 401).
    if not VISIBLE_ASCII.fullmatch(key):
        raise exceptions.AuthenticationFailed(INVALID)
    return key.decode("ascii")


class ApiKeyAuthentication(BaseAuthentication):
    """An organization's API key (`sk_…`), sent as a token is. One query: the key's row by its
    prefix, with its organization; then the hash of the whole key is compared in constant time.

    A revoked or expired key is refused at once (the row is read on every request, nothing is
    cached). `last_used_at` is written at most once a `LAST_USED_RESOLUTION` (a minute): an
    UPDATE that matches only when the stored time is older, so concurrent requests write it once.

    The request's `user` and `auth` are both the key: it acts for its organization with its role,
    and is the `created_by` of what it makes.
    """

    def authenticate(self, request):
        key = credential_from_header(request)
        if key is None:
            return None
        prefix = ApiKey.prefix_of(key)
        if prefix is None:
            return None  # not an API key: a member's token (ExpiringTokenAuthentication)
        found = _API_KEY.fetch(prefix=prefix)
        api_key = found[0] if found else None
        if api_key is None or not compare_digest(hash_api_key(key), api_key.digest):
            raise exceptions.AuthenticationFailed(INVALID)
        now = timezone.now()
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if api_key.expires_at is not None and api_key.expires_at <= now:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        stale = now - ApiKey.LAST_USED_RESOLUTION
        if api_key.last_used_at is None or api_key.last_used_at < stale:
            ApiKey.objects.filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale), pk=api_key.pk
            ).update(last_used_at=now)
            api_key.last_used_at = now
        return api_key, api_key

    def authenticate_header(self, request):
        return "Token"  # as knox's class says it: one challenge, whichever credential is missing


class ExpiringTokenAuthentication(TokenAuthentication):
    """knox's hashed, expiring tokens, each bound to one membership, looked up in one query (the
    token with its user, membership and organization): the role is the membership's as it is now,
    and a removed membership has taken its tokens with it (ON DELETE CASCADE).

    knox's own class scans all of the user's tokens on every request to delete expired ones;
    here an expired token is simply refused (and deleted), and `manage.py purge_tokens` clears the
    rest in bulk.
    """

    def __init__(self, *, listing_organizations: bool = False):
        # For the view that lists the organizations the token's user is a member of (`/api/me/`):
        # they are read with the token, in its query (`listed_organizations` on the token).
        self.listing_organizations = listing_organizations

    def authenticate(self, request):
        key = credential_from_header(request)
        if key is None:
            return None
        return self.authenticate_credentials(key)

    def authenticate_credentials(self, token: str):
        candidates = self.candidates(token[: CONSTANTS.TOKEN_KEY_LENGTH])
        now = timezone.now()
        for auth_token in candidates:
            if auth_token.expiry is not None and auth_token.expiry < now:
                auth_token.delete()
                continue
            if self._digest_matches(token, auth_token.digest):
                return self.validate_user(auth_token)
        raise exceptions.AuthenticationFailed(INVALID)

    def candidates(self, token_key: str) -> list:
        """The tokens whose key starts as this one's (knox's lookup), with what they authenticate;
        `listing_organizations`: each with `listed_organizations`, (id, name, role) of every
        membership of its user, in the order joined."""
        if not self.listing_organizations:
            return _MEMBER_TOKENS.fetch(token_key=token_key)
        tokens: dict = {}
        for row in _MEMBER_TOKENS_LISTING.fetch(token_key=token_key):
            token = tokens.setdefault(row.pk, row)
            listed = token.__dict__.setdefault("listed_organizations", [])
            if row.listed_organization_id is not None:  # a user with no membership: none joined
                listed.append((row.listed_organization_id, row.listed_organization_name, row.listed_role))
        return list(tokens.values())

    @staticmethod
    def _digest_matches(token: str, digest: str) -> bool:
        try:
            return compare_digest(hash_token(token), digest)
        except (TypeError, ValueError):
            return False
