"""The webhook jobs, on Django's task API (the TASKS setting; the database backend by default, so a
job is a row written in the transaction of the events it carries)."""

from django_tasks import task


@task()
def send_webhooks(delivery_ids: list[int]) -> None:
    """POST each of these deliveries (claimed one by one, so two workers never send the same one at
    once), outside any transaction."""
    from events.webhooks import deliveries_send

    deliveries_send(delivery_ids)
