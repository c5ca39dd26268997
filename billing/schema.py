"""OpenAPI: the auth scheme, and every error status an operation can answer with.

drf-spectacular documents the success responses from the serializers; `BillingAutoSchema` adds
the errors that the conventions of the API produce (400, 401, 404, 409, 422, 429) so that a client
generated from the schema knows every status it must handle.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for a person.")
    code = serializers.CharField(help_text="A stable machine-readable code.")


VALIDATION_ERROR = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description=(
        "Invalid input: `{field: [message, ...]}` as DRF reports it (nested for nested fields), "
        'or `{"detail": ..., "code": ...}` for an unreadable body.'
    ),
)
ERRORS = {
    "401": OpenApiResponse(ErrorSerializer, description="No token, or an invalid or expired one."),
    "404": OpenApiResponse(ErrorSerializer, description="No such object among the caller's own."),
    "409": OpenApiResponse(
        ErrorSerializer,
        description="The object's state forbids the action, or a concurrent request conflicts.",
    ),
    "422": OpenApiResponse(
        ErrorSerializer, description="The Idempotency-Key was used before with another request."
    ),
    "429": OpenApiResponse(ErrorSerializer, description="Too many requests; retry later."),
}


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Up to 255 characters, unique per request you mean to make once. A retry with the same key and "
        "body returns the first response again (header `Idempotent-Replayed: true`) without a second "
        "write; the same key with another body or endpoint is 422; while the first is running, 409."
    ),
)


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "users.auth.ExpiringTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")


class BillingAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code not in responses:
                response = VALIDATION_ERROR if code == "400" else ERRORS[code]
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return responses

    def _is_idempotent(self) -> bool:
        handler = getattr(self.view, getattr(self.view, "action", None) or self.method.lower(), None)
        return getattr(handler, "idempotent", False)

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if self._is_idempotent():
            parameters = [*parameters, IDEMPOTENCY_KEY]
        return parameters

    def _error_codes(self) -> list[str]:
        view, method = self.view, self.method
        codes = []
        has_input = method in ("POST", "PUT", "PATCH") or bool(self._get_filter_parameters())
        if has_input or self._is_list_view():
            codes.append("400")
        if not all(isinstance(p, AllowAny) for p in view.get_permissions()):
            codes.append("401")
        if "{" in self.path or self._is_list_view():
            codes.append("404")
        if method in ("POST", "PUT", "PATCH", "DELETE") and getattr(view, "may_conflict", True):
            codes.append("409")
        if self._is_idempotent():
            codes.append("422")
        if view.get_throttles():
            codes.append("429")
        return codes
