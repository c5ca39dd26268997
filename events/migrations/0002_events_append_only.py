"""An event is never changed once written: the database refuses an UPDATE of events_event (a trigger
on PostgreSQL and on SQLite), whatever code runs. Deleting stays possible: the retention purge."""

from django.db import migrations

MESSAGE = "events are append-only: an event is never changed"
STATEMENTS = {
    "postgresql": [
        f"""CREATE FUNCTION events_event_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'restrict_violation'; END $$""",
        """CREATE TRIGGER events_event_append_only BEFORE UPDATE ON events_event
        FOR EACH ROW EXECUTE FUNCTION events_event_refuse_update()""",
    ],
    "sqlite": [
        f"""CREATE TRIGGER events_event_append_only BEFORE UPDATE ON events_event
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    ],
}
REVERSE = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS events_event_append_only ON events_event",
        "DROP FUNCTION IF EXISTS events_event_refuse_update()",
    ],
    "sqlite": ["DROP TRIGGER IF EXISTS events_event_append_only"],
}


def run(statements_by_vendor):
    def apply(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in statements_by_vendor:
            raise RuntimeError(f"events_event has no append-only trigger for {vendor}; add it here")
        for statement in statements_by_vendor[vendor]:
            schema_editor.execute(statement, params=None)

    return apply


class Migration(migrations.Migration):
    dependencies = [("events", "0001_initial")]

    operations = [migrations.RunPython(run(STATEMENTS), run(REVERSE))]
