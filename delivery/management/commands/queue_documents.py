from django.core.management.base import BaseCommand

from delivery.services import documents_queue_missing


class Command(BaseCommand):
    help = (
        "Queue a PDF (version 1) for every issued invoice that has none: invoices issued before the delivery "
        "app was installed, or loaded as the demo data is. The worker renders and stores them. Safe to run "
        "again: an invoice with a version is left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("--organization", type=int, help="Only this organization's invoices (its id).")

    def handle(self, *args, organization=None, **options):
        queued = documents_queue_missing(organization_id=organization)
        self.stdout.write(f"{queued} document(s) queued.")
