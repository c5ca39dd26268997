"""OutboundEmail.message_id is unique by a constraint (email_message_id_unique), not `unique=True`:
on PostgreSQL without the LIKE index nothing reads (see invoices.0005_unique_without_like_index)."""

from importlib import import_module

from django.db import migrations, models

unique_by_constraint = import_module(
    "invoices.migrations.0005_unique_without_like_index"
).unique_by_constraint


def _message_id() -> models.CharField:
    field = models.CharField(max_length=200)
    field.name = "message_id"
    return field


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0002_organization_references"),
        ("invoices", "0005_unique_without_like_index"),
    ]

    operations = [unique_by_constraint("delivery", "OutboundEmail", _message_id(), "email_message_id_unique")]
