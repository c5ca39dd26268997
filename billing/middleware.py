import logging
import time
import uuid

from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.contrib.sessions import middleware as sessions_middleware
from django.http import JsonResponse

from billing import context
from billing.parsers import UNSUPPORTED_CHARSET, text_encoding

request_logger = logging.getLogger("billing.request")


class SessionPathsOnlyMixin:
    """Run a middleware of the session only for the paths that have one (SESSION_PATH_PREFIXES).

    The session, its user and its messages serve the pages that log in with a session cookie: the
    admin. The API authenticates every request by its Authorization header, so its requests skip
    them (no session read, no `Vary: Cookie`). CSRF protection stays on every path
    (`CsrfViewMiddleware`, unchanged): DRF's views are exempt from it, the rest are protected.

    Subclasses of Django's classes, each in its place in MIDDLEWARE, rather than one middleware
    wrapping them: the admin's system checks look for these classes (or subclasses) there.
    """

    def __init__(self, get_response):
        super().__init__(get_response)
        self.path_prefixes = tuple(settings.SESSION_PATH_PREFIXES)

    def __call__(self, request):
        if request.path_info.startswith(self.path_prefixes):
            return super().__call__(request)
        return self.get_response(request)


class SessionMiddleware(SessionPathsOnlyMixin, sessions_middleware.SessionMiddleware):
    pass


class AuthenticationMiddleware(SessionPathsOnlyMixin, auth_middleware.AuthenticationMiddleware):
    pass


class MessageMiddleware(SessionPathsOnlyMixin, messages_middleware.MessageMiddleware):
    pass


class RequestSizeLimitMiddleware:
    """Refuse a body larger than MAX_REQUEST_BYTES with 413, before anything reads it.

    Django enforces DATA_UPLOAD_MAX_MEMORY_SIZE only when `request.body` is read; DRF's parsers
    read the stream directly, so the limit is checked here, from Content-Length. (A body without
    Content-Length is read as empty by Django's bounded stream, so it cannot grow unchecked.)
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(
                {"detail": "Invalid Content-Length header.", "code": "bad_request"}, status=400
            )
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return JsonResponse(
                {
                    "detail": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
                    "code": "request_too_large",
                },
                status=413,
            )
        return self.get_response(request)


class RequestCharsetMiddleware:
    """Refuse a request whose Content-Type names a charset that is not a text encoding, with 415.

    Django and DRF decode the query string, the form fields and the JSON body with whatever codec the
    charset parameter names (`billing.parsers.TEXT_ENCODINGS` says why that is dangerous). Refused
    here, before anything reads the request, no path of the project (the API, the admin's forms)
    decodes with one; an unknown charset is refused too, rather than silently read as UTF-8.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        charset = (request.content_params or {}).get("charset")
        if charset is not None and text_encoding(charset) is None:
            return JsonResponse({"detail": UNSUPPORTED_CHARSET, "code": "unsupported_media_type"}, status=415)
        return self.get_response(request)


class RequestLogMiddleware:
    """One structured log record per request: who, what, outcome, how long.

    It records the method, the path (query strings included; they carry filters, never secrets),
    the status, the duration, who (the user id, or the API key id), the organization the credential
    acts for, and a request id (taken from `X-Request-ID` when a proxy
    sets one, echoed back in the response). Never headers or bodies, so never tokens or passwords.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = _request_id(request.META.get("HTTP_X_REQUEST_ID"))
        started = time.perf_counter()
        token = context.request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            context.request_id.reset(token)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        user = getattr(request, "user", None)
        auth = None
        # DRF authenticates inside the view; its user is on the response's renderer context.
        drf_request = (getattr(response, "renderer_context", None) or {}).get("request")
        if drf_request is not None:
            user = getattr(drf_request, "_user", user)
            auth = getattr(drf_request, "_auth", None)
        # An API key is both the request's user and its credential: logged as the key, not a user.
        is_key = auth is not None and auth is user
        response["X-Request-ID"] = request_id
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        request_logger.log(
            level,
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.get_full_path(),
                "status": response.status_code,
                "duration_ms": duration_ms,
                "user_id": None if is_key else getattr(user, "pk", None),
                "api_key_id": auth.pk if is_key else None,
                "organization_id": getattr(auth, "organization_id", None),
                "remote_addr": request.META.get("REMOTE_ADDR"),
            },
        )
        return response


def _request_id(incoming: str | None) -> str:
    if incoming and len(incoming) <= 64 and incoming.isascii() and incoming.isprintable():
        return incoming
    return uuid.uuid4().hex
