"""System checks of what delivery needs from the machine and the settings: warnings, never errors —
the rest of the app serves without them."""

from django.conf import settings
from django.core import checks


def pdf_engine(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """`delivery.W001`: WeasyPrint cannot load (the system's Pango is missing): PDFs answer 503
    `pdf_unavailable`, emails wait for their attachment and are retried."""
    from delivery.documents import pdf_available

    if pdf_available():
        return []
    return [
        checks.Warning(
            "The PDF engine (WeasyPrint) cannot be loaded: invoice PDFs are unavailable (503 pdf_unavailable) and "
            "invoice emails, which carry the PDF, are retried until it is.",
            hint="Install the system's Pango (Debian: apt-get install libpango-1.0-0 libpangoft2-1.0-0).",
            id="delivery.W001",
        )
    ]


def email_backend(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """`delivery.W002`: no EMAIL_URL with DJANGO_DEBUG=0: emails are queued and stay queued."""
    if settings.EMAIL_CONFIGURED:
        return []
    return [
        checks.Warning(
            "EMAIL_URL is not set: invoice emails and reminders are queued but not sent.",
            hint="Set EMAIL_URL, e.g. smtp://user:password@smtp.example.com:587?tls=1; the queued ones go out then.",
            id="delivery.W002",
        )
    ]
