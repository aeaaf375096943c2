"""URL map: the contract in DESIGN.md ("Contracts other tools rely on")."""

from django.contrib import admin
from django.urls import include, path

from broker import admin_login, health
from broker import views as broker_views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("sso/", include("broker.urls")),
    path("breakglass/", include("broker.breakglass.urls")),
    path("auth/verify", broker_views.forward_auth_view, name="forward-auth"),
    # Before the admin's own URLs: its login page is the SSO picker.
    path("admin/login/", admin_login.admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/", include("broker.api.urls")),
]

handler400 = "broker.views.bad_request"
handler403 = "broker.views.permission_denied"
handler404 = "broker.views.page_not_found"
handler500 = "broker.views.server_error"
