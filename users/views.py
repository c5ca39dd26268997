import math

from django.contrib import admin
from django.contrib.auth.signals import user_logged_out
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.schema import ErrorSerializer
from users.serializers import LoginSerializer, RegisterSerializer, TokenSerializer, UserSerializer
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
            201: UserSerializer,
            403: OpenApiResponse(ErrorSerializer, description="Registration is closed."),
        },
        summary="Create an account",
    )
    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = user_register(**serializer.validated_data)
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


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
        return Response(TokenSerializer({"token": token, "expiry": instance.expiry}).data)


class LogoutView(APIView):
    """Revoke the token the request was made with; the caller's other tokens keep working."""

    may_conflict = False

    @extend_schema(request=None, responses={204: None}, summary="Revoke the current token")
    def post(self, request):
        request.auth.delete()
        user_logged_out.send(sender=request.user.__class__, request=request, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    @extend_schema(responses=UserSerializer, summary="The authenticated user")
    def get(self, request):
        return Response(UserSerializer(request.user).data)


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
