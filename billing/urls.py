from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from billing.views import ApiRootView, HealthView
from delivery.urls import hosted_urlpatterns
from users.views import admin_login

api_patterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("", include("users.urls")),
    path("", include("customers.urls")),
    # The invoices viewset as the delivery app composes it (send, remind, emails, PDF).
    path("", include("delivery.urls")),
    path("", include("payments.urls")),
    path("", include("events.urls")),
    path("health/", HealthView.as_view(), name="health"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # No metadata class: the docs pages answer OPTIONS with 405, not by rendering their template.
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema", metadata_class=None), name="swagger-ui"),
    path(
        "redoc/",
        SpectacularRedocView.as_view(
            url_name="schema", template_name="billing/redoc.html", metadata_class=None
        ),
        name="redoc",
    ),
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="swagger-ui"), name="root"),
    path("api/", include(api_patterns)),
    *hosted_urlpatterns,
    # Ahead of the admin's own login URL: the same page, its POSTs throttled like the API's login.
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
]

handler404 = "billing.views.not_found"
handler500 = "billing.views.server_error"
