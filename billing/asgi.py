import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings")
django.setup(set_prefix=False)

from billing.handlers import BillingASGIHandler  # noqa: E402 - needs the settings set up first

# Django's get_asgi_application(), with the project's request class (billing/handlers.py).
application = BillingASGIHandler()
