"""Render invoices to PDF (and the first page to PNG) into a directory: to look at the documents."""

import re
import shutil
import subprocess
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Prefetch

from delivery import documents
from invoices.models import Invoice, Line

PNG_DPI = 100


def file_stem(invoice: Invoice) -> str:
    """A file name for the invoice: its number with anything but letters, digits, ".", "_" and "-"
    replaced ("INV/2030/7" -> "INV_2030_7"); a draft is "draft-<id>"."""
    if invoice.status == Invoice.Status.DRAFT or not invoice.number:
        return f"draft-{invoice.pk}"
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", invoice.number).lstrip(".")
    return stem or f"invoice-{invoice.pk}"


class Command(BaseCommand):
    help = (
        "Render every issued invoice (of one organization with --organization) to DIR/<number>.pdf, "
        "and its first page to DIR/<number>-1.png when pdftoppm (poppler-utils) is installed. "
        "--drafts renders the drafts too (marked DRAFT, as draft-<id>.pdf)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, help="The directory to write to (made if missing).")
        parser.add_argument("--organization", type=int, help="Only this organization's invoices (its id).")
        parser.add_argument("--drafts", action="store_true", help="Render the drafts too.")

    def handle(self, *args, out, organization=None, drafts=False, **options):
        if not documents.pdf_available():
            raise CommandError("WeasyPrint cannot be loaded (is the system's Pango installed?)")
        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        invoices = Invoice.objects.select_related("organization", "customer").prefetch_related(
            Prefetch("lines", queryset=Line.objects.order_by("position"))
        )
        if organization is not None:
            invoices = invoices.filter(organization_id=organization)
        if not drafts:
            invoices = invoices.exclude(status=Invoice.Status.DRAFT)
        pdftoppm = shutil.which("pdftoppm")
        written = 0
        for invoice in invoices.order_by("organization_id", "issue_date", "pk"):
            stem = file_stem(invoice)
            started = time.perf_counter()
            pdf = documents.render_pdf(invoice, draft=invoice.status == Invoice.Status.DRAFT)
            elapsed = time.perf_counter() - started
            path = directory / f"{stem}.pdf"
            path.write_bytes(pdf)
            written += 1
            self.stdout.write(f"{path} ({len(pdf)} bytes, {elapsed * 1000:.0f} ms)")
            if pdftoppm:
                # pdftoppm -singlefile writes <prefix>.png; the first page only, at PNG_DPI.
                prefix = directory / f"{stem}-1"
                subprocess.run(  # noqa: S603 (a fixed program found on PATH, our own paths)
                    [pdftoppm, "-png", "-r", str(PNG_DPI), "-f", "1", "-l", "1", "-singlefile", path, prefix],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                self.stdout.write(f"{prefix}.png")
        if not pdftoppm:
            self.stderr.write("pdftoppm is not on PATH (apt-get install poppler-utils): no PNG written.")
        self.stdout.write(self.style.SUCCESS(f"{written} invoice(s) rendered to {directory}"))
