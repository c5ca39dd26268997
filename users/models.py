from django.db import models


class ThrottleCounter(models.Model):
    """How many requests one client has made in the current window of one throttle.

    `key` is the throttle's scope and a keyed hash of the client's address (users/throttling.py), so
    it has a fixed length whatever the client sends, and no address is stored. The row is counted by
    one upsert and starts again at 1 when a new window starts; rows of windows that are over are
    deleted as new windows start.
    """

    key = models.CharField(primary_key=True, max_length=100)
    window_start = models.DateTimeField(db_index=True)
    count = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.key}: {self.count} since {self.window_start:%Y-%m-%d %H:%M:%S}"
