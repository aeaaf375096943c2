"""/breakglass/...: the emergency login, outside SSO (see broker.breakglass.views)."""

from django.urls import path

from broker.breakglass import views

app_name = "breakglass"

urlpatterns = [
    path("", views.login_view, name="login"),
    path("verify/", views.verify_view, name="verify"),
    path("logout/", views.logout_view, name="logout"),
    path("enroll/<str:secret>/", views.enroll_view, name="enroll"),
]
