"""The request class of the WSGI and ASGI entry points.

Django reads a request's charset when it builds the request object, before any middleware runs,
and its `encoding` setter re-reads the query string with that codec: with a codec that is not a
text encoding (`charset=rot13`, `bz2`) and any query string, building the request raises and the
server answers 500. Here a charset is taken as the request's encoding only when it is a text
encoding a request may use (`billing.parsers.text_encoding`); any other is left in
`content_params`, where RequestCharsetMiddleware refuses it with 415.
"""

from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.utils.http import parse_header_parameters

from billing.parsers import text_encoding


class _TextCharsetOnly:
    def _set_content_type_params(self, meta):
        try:
            self.content_type, self.content_params = parse_header_parameters(meta.get("CONTENT_TYPE", ""))
        except ValueError:  # an RFC 2231 parameter naming an unknown codec
            self.content_type, self.content_params = "", {"charset": "(malformed)"}
        charset = self.content_params.get("charset")
        if charset is not None and text_encoding(charset) is not None:
            self.encoding = charset


class BillingWSGIRequest(_TextCharsetOnly, WSGIRequest):
    pass


class BillingASGIRequest(_TextCharsetOnly, ASGIRequest):
    pass


class BillingWSGIHandler(WSGIHandler):
    request_class = BillingWSGIRequest


class BillingASGIHandler(ASGIHandler):
    request_class = BillingASGIRequest
