"""Invoice.public_token is unique by a constraint (invoice_public_token_unique), not `unique=True`.

PostgreSQL only: `unique=True` on a CharField also built a LIKE index there (varchar_pattern_ops),
which nothing reads and every insert, and every update that cannot be HOT, had to write. SQLite has
no such index, and rebuilding its table would have to drop and re-create its triggers: its column keeps its
UNIQUE, which enforces the same rule."""

from django.db import migrations, models

MODEL, FIELD = "Invoice", "public_token"
CONSTRAINT = models.UniqueConstraint(fields=[FIELD], name="invoice_public_token_unique")


def _fields(model):
    unique = model._meta.get_field(FIELD)
    plain = models.CharField(blank=True, editable=False, max_length=43, null=True)
    plain.set_attributes_from_name(FIELD)
    plain.model = model
    return unique, plain


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("invoices", MODEL)
    unique, plain = _fields(model)
    schema_editor.alter_field(model, unique, plain)  # drops the unique constraint and the LIKE index
    schema_editor.add_constraint(model, CONSTRAINT)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("invoices", MODEL)
    unique, plain = _fields(model)
    schema_editor.remove_constraint(model, CONSTRAINT)
    schema_editor.alter_field(model, plain, unique)


class Migration(migrations.Migration):
    dependencies = [("invoices", "0004_public_token")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                migrations.AlterField(
                    model_name="invoice",
                    name=FIELD,
                    field=models.CharField(blank=True, editable=False, max_length=43, null=True),
                ),
                migrations.AddConstraint(model_name="invoice", constraint=CONSTRAINT),
            ],
        ),
    ]
