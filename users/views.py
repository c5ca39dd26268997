import math

from django.contrib import admin
from django.contrib.auth.signals import user_logged_out
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import NotFound, Throttled, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.db import CompiledQuery
from billing.schema import ErrorSerializer
from billing.tenancy import OrganizationScopedViewSetMixin, actor_of, organization_of
from users import services
from users.auth import ExpiringTokenAuthentication
from users.models import ApiKey, Membership
from users.roles import Action
from users.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    LoginSerializer,
    MemberCreateSerializer,
    MemberSerializer,
    MemberUpdateSerializer,
    MeSerializer,
    OrganizationSerializer,
    RegisteredSerializer,
    RegisterSerializer,
    TokenSerializer,
)
from users.services import user_login, user_register
from users.throttling import LoginRateThrottle, ThrottleUnavailable


class RegisterView(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [LoginRateThrottle]
    may_conflict = False

    @extend_schema(
        request=RegisterSerializer,
        responses={
            201: RegisteredSerializer,
            403: OpenApiResponse(ErrorSerializer, description="Registration is closed."),
        },
        summary="Create an account",
    )
    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user, organization = user_register(**serializer.validated_data)
        user.organization = organization
        return Response(RegisteredSerializer(user).data, status=status.HTTP_201_CREATED)


class LoginView(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [LoginRateThrottle]
    may_conflict = False

    @extend_schema(request=LoginSerializer, responses={200: TokenSerializer}, summary="Get a token")
    def post(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance, token = user_login(request=request, **serializer.validated_data)
        data = {
            "token": token,
            "expiry": instance.expiry,
            "organization": instance.organization,
            "role": instance.role,
        }
        return Response(TokenSerializer(data).data)


class LogoutView(APIView):
    """Revoke the token the request was made with; the caller's other tokens keep working. An API
    key is revoked through /api/api-keys/ instead (400 here)."""

    may_conflict = False
    required_actions = {"POST": Action.READ}  # every role may log out

    @extend_schema(request=None, responses={204: None}, summary="Revoke the current token")
    def post(self, request):
        if isinstance(request.auth, ApiKey):
            raise ValidationError(
                {
                    "non_field_errors": [
                        "An API key does not log out; revoke it with DELETE /api/api-keys/{id}/."
                    ]
                }
            )
        request.auth.delete()
        user_logged_out.send(sender=request.user.__class__, request=request, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _memberships_of(user_id: int):
    """The user's organizations, as `/api/me/` lists them: in the order joined, with their names."""
    return Membership.objects.filter(user_id=user_id).values_list(
        "organization_id", "organization__name", "role"
    )


# Read on every `/api/me/`: compiled once (billing.db.CompiledQuery).
_MEMBERSHIPS = CompiledQuery(_memberships_of, user_id=int)


def _organizations_listed(token, user) -> list[tuple]:
    """The user's (organization id, name, role), as the authentication read them with the token
    (`ExpiringTokenAuthentication(listing_organizations=True)`), else read now."""
    listed = getattr(token, "listed_organizations", None)
    return listed if listed is not None else _MEMBERSHIPS.fetch(user_id=user.pk)


class MeView(APIView):
    def get_authenticators(self):
        # The API's own, a member's token read with the organizations listed (one query).
        return [
            ExpiringTokenAuthentication(listing_organizations=True)
            if type(authenticator) is ExpiringTokenAuthentication
            else authenticator
            for authenticator in super().get_authenticators()
        ]

    @extend_schema(responses=MeSerializer, summary="The caller, the organization it acts for and its role")
    def get(self, request):
        credential = request.auth
        organization = organization_of(request)
        if isinstance(credential, ApiKey):
            data = {
                "id": None,
                "username": None,
                "email": None,
                "organizations": [
                    {"id": organization.pk, "name": organization.name, "role": credential.role}
                ],
                "api_key": credential,
            }
        else:
            user = request.user
            data = {
                "id": user.pk,
                "username": user.username,
                "email": user.email,
                "organizations": [
                    {"id": id, "name": name, "role": role}
                    for id, name, role in _organizations_listed(credential, user)
                ],
                "api_key": None,
            }
        data |= {"organization": organization, "role": credential.role}
        return Response(MeSerializer(data).data)


class OrganizationView(APIView):
    """The organization the credential acts for: every role reads it, admins and owners change it."""

    required_actions = {"GET": Action.READ, "*": Action.ADMINISTER}

    @extend_schema(responses=OrganizationSerializer, summary="The current organization")
    def get(self, request):
        return Response(OrganizationSerializer(organization_of(request)).data)

    @extend_schema(
        request=OrganizationSerializer, responses=OrganizationSerializer, summary="Change its settings"
    )
    def patch(self, request):
        organization = organization_of(request)
        serializer = OrganizationSerializer(organization, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        organization = services.organization_update(
            organization_id=organization.pk, **serializer.validated_data
        )
        return Response(OrganizationSerializer(organization).data)


class MemberViewSet(
    OrganizationScopedViewSetMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """The organization's members: every role reads them; admins add, change and remove members
    (only owners touch owners)."""

    queryset = Membership.objects.select_related("user").order_by("created_at", "id")
    serializer_class = MemberSerializer
    required_actions = {"GET": Action.READ, "*": Action.ADMINISTER}
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filter_backends = []

    def _caller(self) -> dict:
        """Who asks, as the member services take it: the credential's role, and for a member's
        token the membership (read again under the organization's lock, for owner changes)."""
        return {
            "caller_role": getattr(self.request.auth, "role", None),
            "caller_membership_id": getattr(self.request.auth, "membership_id", None),
        }

    @extend_schema(request=MemberCreateSerializer, responses={201: MemberSerializer}, summary="Add a member")
    def create(self, request):
        serializer = MemberCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_add(
            organization_id=organization_of(request).pk, **self._caller(), **serializer.validated_data
        )
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=MemberUpdateSerializer, responses=MemberSerializer, summary="Change a member's role"
    )
    def partial_update(self, request, pk=None):
        membership_id = self.object_id()
        serializer = MemberUpdateSerializer(data=request.data)
        if not serializer.is_valid():
            if not self.get_queryset().filter(pk=membership_id).exists():
                raise NotFound()
            raise ValidationError(serializer.errors)
        if "role" not in serializer.validated_data:
            return Response(MemberSerializer(self.get_queryset().get(pk=membership_id)).data)
        membership = services.membership_change_role(
            organization_id=organization_of(request).pk,
            membership_id=membership_id,
            **self._caller(),
            **serializer.validated_data,
        )
        return Response(MemberSerializer(membership).data)

    @extend_schema(responses={204: None}, summary="Remove a member (their tokens stop working)")
    def destroy(self, request, pk=None):
        services.membership_remove(
            organization_id=organization_of(request).pk,
            membership_id=self.object_id(),
            **self._caller(),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiKeyViewSet(
    OrganizationScopedViewSetMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """The organization's API keys (admins and owners only): create (the key is shown once),
    list, revoke."""

    queryset = ApiKey.objects.all()
    serializer_class = ApiKeySerializer
    required_actions = {"*": Action.ADMINISTER}
    http_method_names = ["get", "post", "delete", "head", "options"]
    filter_backends = []

    @extend_schema(
        request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer}, summary="Create a key"
    )
    def create(self, request):
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actor = actor_of(request)
        api_key, key = services.api_key_create(
            organization_id=organization_of(request).pk,
            created_by=actor if not isinstance(actor, ApiKey) else None,
            **serializer.validated_data,
        )
        api_key.key = key
        return Response(ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None}, summary="Revoke a key (it stops working at once; the row stays)")
    def destroy(self, request, pk=None):
        services.api_key_revoke(organization_id=organization_of(request).pk, api_key_id=self.object_id())
        return Response(status=status.HTTP_204_NO_CONTENT)


@sensitive_post_parameters()
@never_cache
def admin_login(request, extra_context=None):
    """The admin's login page, with its POSTs throttled like the API's login, in the same bucket.

    Routed at admin/login/ ahead of the admin's own URLs; the page itself (GET) is not counted.
    """
    if request.method == "POST":
        throttle = LoginRateThrottle()
        try:
            allowed = throttle.allow_request(request, view=None)
        except ThrottleUnavailable as exc:
            return JsonResponse({"detail": str(exc.detail), "code": exc.default_code}, status=exc.status_code)
        if not allowed:
            wait = throttle.wait()
            refused = Throttled(wait)
            response = JsonResponse(
                {"detail": str(refused.detail), "code": refused.default_code}, status=refused.status_code
            )
            response["Retry-After"] = str(math.ceil(wait))
            return response
    return admin.site.login(request, extra_context)
