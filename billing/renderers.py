"""The API's JSON renderer: DRF's `JSONRenderer` output, byte for byte, written by orjson.

DRF renders with `json.dumps` (compact separators, `ensure_ascii=False`, `allow_nan=False`, its own
encoder for what JSON has no type for) and then escapes U+2028 and U+2029, so that the text is also
valid JavaScript. orjson writes the same text for everything our responses hold — dicts and lists
and their subclasses (ReturnDict, ErrorDetail), strings with the same escapes, integers, booleans,
null — except in three places, which are handled here:

- U+2028 and U+2029 are written raw by orjson: escaped afterwards, as DRF does.
- A date, time or date-time orjson would format itself (microseconds kept, "+00:00"): passed to DRF's
  encoder instead (milliseconds, "Z"), as is everything else orjson does not know (Decimal, lazy
  strings, sets, ...). A float that encoder returns (for a Decimal: serializers write money as
  strings, but a bare Decimal in a response is a number) is written as Python writes it.
- What orjson refuses (an integer beyond 64 bits, a non-string key, a lone surrogate, nesting deeper
  than 254): rendered by DRF's renderer, which so answers as it always did (text or the same error).
  It also serves a request for indented output (`Accept: application/json; indent=4`) and the
  Browsable API.

Left different, and absent from every response: a float in the data itself (orjson writes 1e-7 where
Python writes 1e-07, and NaN as null where DRF refuses it; counts are integers) and an
OrderedDict reordered by `move_to_end` (orjson keeps its insertion order). `tests/test_renderer.py`
pins the equality over representative responses.

drf-orjson-renderer's `ORJSONRenderer` is not used: it writes U+2028/U+2029 raw, formats dates with
orjson's rules and ignores the indent a client asks for, so its output is not DRF's.
"""

import math

import orjson
from rest_framework.renderers import JSONRenderer

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
_LINE_SEPARATOR, _PARAGRAPH_SEPARATOR = "\u2028".encode(), "\u2029".encode()
_ESCAPED_LINE_SEPARATOR, _ESCAPED_PARAGRAPH_SEPARATOR = b"\\u2028", b"\\u2029"


class FastJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        if not self._is_default_form(accepted_media_type, renderer_context or {}):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            text = orjson.dumps(data, default=self._default, option=_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError is one
            return super().render(data, accepted_media_type, renderer_context)
        if b"\xe2\x80" in text:
            text = text.replace(_LINE_SEPARATOR, _ESCAPED_LINE_SEPARATOR).replace(
                _PARAGRAPH_SEPARATOR, _ESCAPED_PARAGRAPH_SEPARATOR
            )
        return text

    def _default(self, obj):
        value = self.encoder_class().default(obj)
        if isinstance(value, float):
            if not math.isfinite(value):  # json.dumps(allow_nan=False) refuses it; so does DRF's renderer
                raise ValueError(value)
            return orjson.Fragment(float.__repr__(value))
        return value

    def _is_default_form(self, accepted_media_type, renderer_context) -> bool:
        """DRF's settings as orjson writes (compact, UTF-8, strict) and no indent asked for."""
        return (
            self.compact
            and not self.ensure_ascii
            and self.strict
            and self.get_indent(accepted_media_type, renderer_context) is None
        )
