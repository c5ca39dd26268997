from django.conf import settings
from django.core.cache import caches
from django.utils.connection import ConnectionProxy
from rest_framework.throttling import SimpleRateThrottle


class LoginRateThrottle(SimpleRateThrottle):
    """Per client IP, at `LOGIN_THROTTLE_RATE` (for example `10/min`), for login and register.

    The counts are kept in the "throttle" cache, a database table shared by every worker and server.
    """

    scope = "login"
    cache = ConnectionProxy(caches, "throttle")

    def get_rate(self):
        return settings.LOGIN_THROTTLE_RATE

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
