from django.core.management.base import BaseCommand, CommandError

from payments.ledger import ledger_mismatches


class Command(BaseCommand):
    help = (
        "Recompute every invoice's totals from its lines and amount_paid from its payments, check the "
        "status they imply and the per-organization totals (InvoiceTotals) against the invoices, print every "
        "mismatch and exit non-zero if there is one."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--organization", type=int, help="Check one organization's invoices only (an organization id)."
        )

    def handle(self, *args, organization=None, **options):
        count = 0
        for mismatch in ledger_mismatches(organization_id=organization):
            count += 1
            self.stdout.write(mismatch)
        if count:
            raise CommandError(f"{count} mismatch{'es' if count != 1 else ''} found")
        self.stdout.write(self.style.SUCCESS("ledger consistent: 0 mismatches"))
