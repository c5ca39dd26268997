"""PostgreSQL: drop the `varchar_pattern_ops` index Django adds beside a character primary key (for
`LIKE 'prefix%'` lookups, which nothing does on an event's id): one index fewer for every event
every write inserts. The primary key's own index serves every read by id. A later migration that
alters `Event.id` may add it back (Django's schema editor does for a character key): drop it again
there."""

from django.db import migrations


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    Event = apps.get_model("events", "Event")
    name = schema_editor._create_index_name(Event._meta.db_table, ["id"], suffix="_like")
    schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def restore(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    Event = apps.get_model("events", "Event")
    statement = schema_editor._create_like_index_sql(Event, Event._meta.get_field("id"))
    if statement is not None:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("events", "0004_organization_references")]

    operations = [migrations.RunPython(drop, restore)]
