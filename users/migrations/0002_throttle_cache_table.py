"""The table of the "throttle" cache (settings.CACHES), where the login throttle keeps its counts.

`createcachetable` creates it (and skips a table that exists); running it from a migration means
`migrate` is the only set-up step, as for every other table.
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_tables(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("users", "0001_initial")]

    operations = [migrations.RunPython(create_cache_tables, migrations.RunPython.noop)]
