"""Settings for benchmark runs: the app's own settings, with a URLconf that adds the framework ceiling.

One other difference from production settings: the hosted page's throttle allows what wrk sends
from its one address (every request is still counted, with the same statement; none is refused).
DEBUG comes from the environment (the harness sets 0).
"""

from billing.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
HOSTED_PAGE_THROTTLE_RATE = "100000000/min"
