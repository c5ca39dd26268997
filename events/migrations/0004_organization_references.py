"""The database refuses a webhook delivery whose event or endpoint belongs to another organization:
composite foreign keys (event_id, organization_id) -> events (id, organization_id) and (endpoint_id,
organization_id) -> endpoints (id, organization_id) on PostgreSQL, onto the keys of 0003; triggers that do
the same on SQLite, raising "foreign_key: <name>" (as payments 0002_organization_references does for the
books). On SQLite a later migration that rebuilds these tables must drop the triggers first and create
them again (this one does so for 0002's append-only trigger, dropped by 0003's rebuild)."""

from importlib import import_module

from django.db import migrations

# 0003's unique keys rebuilt events_event on SQLite, which drops its triggers: the append-only one is
# created again here.
append_only = import_module("events.migrations.0002_events_append_only")

REFERENCES = [
    ("delivery_event_same_org", "events_webhookdelivery", "event_id", "events_event"),
    ("delivery_endpoint_same_org", "events_webhookdelivery", "endpoint_id", "events_webhookendpoint"),
]
POSTGRES = [
    f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}, organization_id) "
    f"REFERENCES {target} (id, organization_id) ON DELETE CASCADE"
    for name, table, column, target in REFERENCES
]
POSTGRES_REVERSE = [
    f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}" for name, table, _, _ in REFERENCES
]


def _sqlite_triggers(name: str, table: str, column: str, target: str) -> list[str]:
    mismatch = f"EXISTS (SELECT 1 FROM {target} WHERE id = NEW.{column} AND organization_id IS NOT NEW.organization_id)"
    refuse = f"BEGIN SELECT RAISE(ABORT, 'foreign_key: {name}'); END"
    return [
        f"CREATE TRIGGER {name}_insert BEFORE INSERT ON {table} WHEN {mismatch} {refuse}",
        f"CREATE TRIGGER {name}_update BEFORE UPDATE OF {column}, organization_id ON {table} WHEN {mismatch} {refuse}",
    ]


SQLITE = [
    *append_only.REVERSE["sqlite"],
    *append_only.STATEMENTS["sqlite"],
    *(statement for reference in REFERENCES for statement in _sqlite_triggers(*reference)),
]
SQLITE_REVERSE = [
    f"DROP TRIGGER IF EXISTS {name}_{kind}" for name, *_ in REFERENCES for kind in ("insert", "update")
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in statements_by_vendor:
            raise RuntimeError(
                f"no organization-reference constraints for {vendor}; add them to this migration"
            )
        for statement in statements_by_vendor[vendor]:
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("events", "0003_id_organization_keys")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES, "sqlite": SQLITE}),
            _run({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
