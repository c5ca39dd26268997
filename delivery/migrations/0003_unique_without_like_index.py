"""OutboundEmail.message_id is unique by a constraint (email_message_id_unique), not `unique=True`.

PostgreSQL only: `unique=True` on a CharField also built a LIKE index there (varchar_pattern_ops),
which nothing reads and every insert, and every update that cannot be HOT, had to write. SQLite has
no such index, and rebuilding its table would have to drop and re-create its triggers: its column keeps its
UNIQUE, which enforces the same rule."""

from django.db import migrations, models

MODEL, FIELD = "OutboundEmail", "message_id"
CONSTRAINT = models.UniqueConstraint(fields=[FIELD], name="email_message_id_unique")


def _fields(model):
    unique = model._meta.get_field(FIELD)
    plain = models.CharField(max_length=200)
    plain.set_attributes_from_name(FIELD)
    plain.model = model
    return unique, plain


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("delivery", MODEL)
    unique, plain = _fields(model)
    schema_editor.alter_field(model, unique, plain)  # drops the unique constraint and the LIKE index
    schema_editor.add_constraint(model, CONSTRAINT)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("delivery", MODEL)
    unique, plain = _fields(model)
    schema_editor.remove_constraint(model, CONSTRAINT)
    schema_editor.alter_field(model, plain, unique)


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0002_organization_references"),
        ("invoices", "0004_public_token"),
        ("users", "0003_one_line_names"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                migrations.AlterField(
                    model_name="outboundemail",
                    name=FIELD,
                    field=models.CharField(max_length=200),
                ),
                migrations.AddConstraint(model_name="outboundemail", constraint=CONSTRAINT),
            ],
        ),
    ]
