"""The webhook endpoints and their deliveries (API.md: Events and webhooks): admins and owners only,
each view an input serializer, one service call (`events.webhooks`), an output serializer."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.tenancy import OrganizationScopedViewSetMixin
from events import webhooks
from events.models import WebhookDelivery, WebhookEndpoint
from events.webhook_serializers import (
    WebhookDeliverySerializer,
    WebhookEndpointInputSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookEndpointWithSecretSerializer,
)
from users.roles import Action


class WebhookEndpointViewSet(
    OrganizationScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The organization's webhook endpoints: where its events are POSTed, signed (Standard Webhooks)."""

    queryset = WebhookEndpoint.objects.all()
    serializer_class = WebhookEndpointSerializer
    required_actions = {"*": Action.ADMINISTER}
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filter_backends = []

    @extend_schema(
        request=WebhookEndpointInputSerializer,
        responses={201: WebhookEndpointWithSecretSerializer},
        summary="Add an endpoint (its secret is shown once; nothing is sent yet)",
    )
    def create(self, request):
        body = WebhookEndpointInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint, secret = webhooks.endpoint_create(
            organization_id=self.organization.pk, **body.validated_data
        )
        endpoint.secret = secret
        return Response(WebhookEndpointWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=WebhookEndpointUpdateSerializer,
        responses=WebhookEndpointSerializer,
        summary="Change an endpoint",
    )
    def partial_update(self, request, pk=None):
        endpoint_id = self.object_id()
        body = WebhookEndpointUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = webhooks.endpoint_update(
            organization_id=self.organization.pk, endpoint_id=endpoint_id, **body.validated_data
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(responses={204: None}, summary="Remove an endpoint and its delivery history")
    def destroy(self, request, pk=None):
        webhooks.endpoint_delete(organization_id=self.organization.pk, endpoint_id=self.object_id())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None,
        responses=WebhookEndpointWithSecretSerializer,
        summary="A new secret (shown once); the old one keeps signing beside it for 24 hours",
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        endpoint, secret = webhooks.endpoint_rotate_secret(
            organization_id=self.organization.pk, endpoint_id=self.object_id()
        )
        endpoint.secret = secret
        return Response(WebhookEndpointWithSecretSerializer(endpoint).data)

    @extend_schema(
        request=None,
        responses={202: WebhookDeliverySerializer},
        summary="Queue a `ping` event to this endpoint alone",
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        delivery = webhooks.endpoint_ping(
            organization_id=self.organization.pk, endpoint_id=self.object_id(), actor=self.actor
        )
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses=WebhookDeliverySerializer(many=True),
        summary="The endpoint's deliveries, newest first",
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        endpoint = self.get_queryset().filter(pk=self.object_id()).only("pk").first()
        if endpoint is None:
            raise WebhookEndpoint.DoesNotExist
        deliveries = WebhookDelivery.objects.filter(
            organization_id=self.organization.pk, endpoint=endpoint
        ).order_by("-created_at", "-id")
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class WebhookDeliveryViewSet(OrganizationScopedViewSetMixin, viewsets.GenericViewSet):
    """One delivery of an event to an endpoint; its history is listed under its endpoint."""

    queryset = WebhookDelivery.objects.all()
    serializer_class = WebhookDeliverySerializer
    required_actions = {"*": Action.ADMINISTER}
    filter_backends = []

    @extend_schema(
        request=None,
        responses={202: WebhookDeliverySerializer},
        summary="Try a delivery again now, from a fresh count of attempts (not a delivered one)",
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        delivery = webhooks.delivery_retry(organization_id=self.organization.pk, delivery_id=self.object_id())
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
