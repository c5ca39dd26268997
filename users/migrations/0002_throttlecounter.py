"""The login throttle counts in a table of our own (users.ThrottleCounter), counted by one upsert.

The "throttle" database cache, whose table 0001 created, is gone from settings.CACHES: its table is
dropped here. Migrating back does not recreate it (0001 would, with the old settings).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("users", "0001_throttle_cache_table")]

    operations = [
        migrations.CreateModel(
            name="ThrottleCounter",
            fields=[
                ("key", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("window_start", models.DateTimeField(db_index=True)),
                ("count", models.PositiveIntegerField()),
            ],
        ),
        migrations.RunSQL("DROP TABLE IF EXISTS throttle_cache", reverse_sql=migrations.RunSQL.noop),
    ]
