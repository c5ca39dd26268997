"""Settings for benchmark runs: the app's own settings, with a URLconf that adds the framework ceiling.

Nothing else differs from production settings; DEBUG comes from the environment (the harness sets 0).
"""

from billing.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
