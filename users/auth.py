from django.utils import timezone
from knox.auth import TokenAuthentication
from knox.models import get_token_model
from knox.settings import CONSTANTS
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header

# The schemes a key may be sent with, lower-cased (a scheme is case-insensitive, RFC 9110).
SCHEMES = (b"token", b"bearer")
MALFORMED_HEADER = 'Authorization header must be "Token <key>" or "Bearer <key>"'


class ExpiringTokenAuthentication(TokenAuthentication):
    """knox's hashed, expiring tokens, looked up in one query.

    The key comes as `Authorization: Token <key>` or `Authorization: Bearer <key>` (what generated
    clients and Swagger UI send). This is the only authentication of the API, so a header in any
    other form is refused with a 401 that says what is wrong, rather than passed on as "no
    credentials"; only a missing (or empty) header is that.

    knox's own class scans all of the user's tokens on every request to delete expired ones;
    here an expired token is simply refused (and deleted), and `manage.py purge_tokens` clears the
    rest in bulk. A header that is not valid UTF-8 is a 401, not a crash.
    """

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts:
            return None
        scheme = parts[0].lower()
        if len(parts) == 1:
            missing = (
                "the key is missing" if scheme in SCHEMES else 'the "Token" or "Bearer" prefix is missing'
            )
            raise exceptions.AuthenticationFailed(f"{MALFORMED_HEADER}: {missing}.")
        if scheme not in SCHEMES:
            raise exceptions.AuthenticationFailed(
                f'{MALFORMED_HEADER}: the scheme is not "Token" or "Bearer".'
            )
        if len(parts) > 2:
            raise exceptions.AuthenticationFailed(f"{MALFORMED_HEADER}: a key has no spaces.")
        return self.authenticate_credentials(parts[1])

    def authenticate_credentials(self, token: bytes):
        try:
            token_str = token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        candidates = (
            get_token_model()
            .objects.select_related("user")
            .filter(token_key=token_str[: CONSTANTS.TOKEN_KEY_LENGTH])
        )
        now = timezone.now()
        for auth_token in candidates:
            if auth_token.expiry is not None and auth_token.expiry < now:
                auth_token.delete()
                continue
            if self._digest_matches(token_str, auth_token.digest):
                return self.validate_user(auth_token)
        raise exceptions.AuthenticationFailed("Invalid token.")

    @staticmethod
    def _digest_matches(token: str, digest: str) -> bool:
        from hmac import compare_digest

        from knox.crypto import hash_token

        try:
            return compare_digest(hash_token(token), digest)
        except (TypeError, ValueError):
            return False
