from django.urls import path
from rest_framework.routers import SimpleRouter

from users import views

router = SimpleRouter()
router.register("members", views.MemberViewSet, basename="member")
router.register("api-keys", views.ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("register/", views.RegisterView.as_view(), name="register"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("me/", views.MeView.as_view(), name="me"),
    path("organization/", views.OrganizationView.as_view(), name="organization"),
    *router.urls,
]
