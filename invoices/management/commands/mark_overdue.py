from django.core.management.base import BaseCommand

from invoices.services import invoice_mark_overdue


class Command(BaseCommand):
    help = "Move every sent invoice whose due date has passed (in TIME_ZONE) to overdue, in one UPDATE."

    def handle(self, *args, **options):
        moved = invoice_mark_overdue()
        self.stdout.write(f"{moved} invoice{'s' if moved != 1 else ''} marked overdue")
