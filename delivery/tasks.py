"""The delivery jobs, on Django's task API (`django_tasks`; the backend is the TASKS setting, the
database one by default, so a job is a row written in the transaction that enqueues it).

A job names its outbox row, or, for a send, its invoice (`deliver_invoice` works the rows that send
wrote); the row holds the state (attempts, next attempt, lease, last error),
so a job may run twice or not at all (its worker killed) without changing the outcome: the row's
claim decides who works it, and the sweeper enqueues again what a dead worker left.
"""

from django_tasks import task


@task()
def render_document(document_id: int) -> None:
    from delivery.services import document_render

    document_render(document_id)


@task()
def send_email(email_id: int) -> None:
    from delivery.services import email_deliver

    email_deliver(email_id)


@task()
def deliver_invoice(invoice_id: int) -> None:
    """A send's job: the invoice's email and PDF version it queued (one job for both)."""
    from delivery.services import invoice_deliver

    invoice_deliver(invoice_id)
