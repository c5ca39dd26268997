"""The webhook jobs, on Django's task API (the TASKS setting; the database backend by default, so a
job is a row written in the transaction of the events it carries)."""

from django_tasks import task


@task()
def send_webhooks(delivery_ids: list[int]) -> None:
    """POST each of these deliveries (claimed one by one, so two workers never send the same one at
    once), outside any transaction."""
    from events.webhooks import deliveries_send

    deliveries_send(delivery_ids)


@task()
def send_event_webhooks(event_ids: list[str]) -> None:
    """POST the deliveries of these events: the job a write's events queue on PostgreSQL, where the
    deliveries are written in the events' own statement (events.services), so the job names the
    events, whose ids are known before the statement, not the deliveries."""
    from events.models import WebhookDelivery
    from events.webhooks import deliveries_send

    waiting = WebhookDelivery.objects.filter(event_id__in=event_ids, status=WebhookDelivery.Status.PENDING)
    deliveries_send(list(waiting.order_by("pk").values_list("pk", flat=True)))
