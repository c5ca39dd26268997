"""What the code below a request may need to know about it without being handed the request: its id
(set by `billing.middleware.RequestLogMiddleware`, echoed as `X-Request-ID`), which the events a
request writes record. Empty outside a request (a management command, the worker)."""

from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("request_id", default="")
