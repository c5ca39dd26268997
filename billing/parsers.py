import codecs

from django.conf import settings
from django.utils.http import parse_header_parameters
from rest_framework import parsers
from rest_framework.exceptions import ParseError, UnsupportedMediaType

# The charsets a request may declare: UTF-8 (and ASCII, a subset of it) and the UTF-16 and UTF-32 that
# RFC 7159 allowed for JSON. A charset parameter names a codec of Python's registry, and that registry
# also holds codecs that are not text encodings: bz2 and zlib decompress (a few hundred bytes become
# hundreds of megabytes, past MAX_REQUEST_BYTES), base64, hex and uu transform, rot13 fails. None of
# them may ever decode a request.
TEXT_ENCODINGS = frozenset(
    {"utf-8", "ascii", "utf-16", "utf-16-be", "utf-16-le", "utf-32", "utf-32-be", "utf-32-le"}
)

UNSUPPORTED_CHARSET = "Unsupported charset in Content-Type: a request body must be UTF-8 (or UTF-16, UTF-32)."


def text_encoding(charset: str) -> str | None:
    """The codec name of `charset` ("UTF8" -> "utf-8") if a request may be decoded with it, else None."""
    try:
        name = codecs.lookup(charset).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None
    return name if name in TEXT_ENCODINGS else None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with every malformed body a 400 and every charset but a text encoding a 415.

    DRF decodes the body with `codecs.getreader(charset)`, any codec at all (see TEXT_ENCODINGS);
    RequestCharsetMiddleware refuses such requests first, and this check holds without it.
    DRF turns a `ValueError` into a 400, but a body nested deeper than Python's recursion limit
    raises `RecursionError`, which would be a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        try:
            declared = parse_header_parameters(media_type or "")[1].get("charset")
        except ValueError:  # an RFC 2231 parameter naming an unknown codec
            raise UnsupportedMediaType(media_type, detail=UNSUPPORTED_CHARSET) from None
        if declared is None:
            declared = parser_context.get("encoding") or settings.DEFAULT_CHARSET
        encoding = text_encoding(declared)
        if encoding is None:
            raise UnsupportedMediaType(media_type, detail=UNSUPPORTED_CHARSET)
        try:
            return super().parse(stream, media_type, {**parser_context, "encoding": encoding})
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
