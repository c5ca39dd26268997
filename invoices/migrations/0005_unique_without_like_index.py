"""Invoice.public_token is unique by a constraint (invoice_public_token_unique), not `unique=True`.

PostgreSQL only: `unique=True` on a CharField also built a LIKE index there (varchar_pattern_ops),
which nothing reads and every insert, and every update that cannot be HOT, had to write. SQLite has
no such index, and rebuilding its table would have to drop and re-create its triggers: its column
keeps its UNIQUE, which enforces the same rule. `unique_by_constraint` is also
delivery.0003_unique_without_like_index's."""

from django.db import migrations, models


def unique_by_constraint(app: str, model_name: str, field: models.CharField, constraint_name: str):
    """The operation that makes `field` (the plain field, named: `field.name`) unique by the
    constraint `constraint_name` instead of `unique=True`: in the state always, in the database on
    PostgreSQL only."""
    constraint = models.UniqueConstraint(fields=[field.name], name=constraint_name)

    def fields(model):
        plain = field.clone()
        plain.set_attributes_from_name(field.name)
        plain.model = model
        return model._meta.get_field(field.name), plain

    def forwards(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            model = apps.get_model(app, model_name)
            unique, plain = fields(model)
            schema_editor.alter_field(model, unique, plain)  # drops the unique constraint and the LIKE index
            schema_editor.add_constraint(model, constraint)

    def backwards(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            model = apps.get_model(app, model_name)
            unique, plain = fields(model)
            schema_editor.remove_constraint(model, constraint)
            schema_editor.alter_field(model, plain, unique)

    return migrations.SeparateDatabaseAndState(
        database_operations=[migrations.RunPython(forwards, backwards)],
        state_operations=[
            migrations.AlterField(model_name=model_name.lower(), name=field.name, field=field.clone()),
            migrations.AddConstraint(model_name=model_name.lower(), constraint=constraint),
        ],
    )


def _public_token() -> models.CharField:
    field = models.CharField(blank=True, editable=False, max_length=43, null=True)
    field.name = "public_token"
    return field


class Migration(migrations.Migration):
    dependencies = [("invoices", "0004_public_token")]

    operations = [unique_by_constraint("invoices", "Invoice", _public_token(), "invoice_public_token_unique")]
