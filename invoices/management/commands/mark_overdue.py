from django.core.management.base import BaseCommand, CommandError

from invoices.services import MarkOverdueIncomplete, invoice_mark_overdue


class Command(BaseCommand):
    help = (
        "Move every sent invoice whose due date has passed (in its organization's time zone) to "
        "overdue, in one UPDATE per time zone in use (organization by organization where one fails, "
        "so no organization blocks another; exits non-zero naming the organizations whose invoices "
        "could not be moved)."
    )

    def handle(self, *args, **options):
        try:
            moved = invoice_mark_overdue()
        except MarkOverdueIncomplete as incomplete:
            raise CommandError(incomplete.message) from None
        self.stdout.write(f"{moved} invoice{'s' if moved != 1 else ''} marked overdue")
