"""The broker's browser-facing URLs under /sso/ (see DESIGN.md for the contract)."""

from django.urls import path

from broker import oidc_views, saml_views, views

app_name = "broker"

urlpatterns = [
    path("", views.picker, name="picker"),
    path("me/", views.me, name="me"),
    path("logout/", views.logout_view, name="logout"),
    path("<slug:slug>/login/", views.begin_login, name="login"),
    path("<slug:slug>/saml/metadata/", saml_views.metadata, name="saml-metadata"),
    path("<slug:slug>/saml/acs/", saml_views.acs, name="saml-acs"),
    path("<slug:slug>/saml/slo/", saml_views.slo, name="saml-slo"),
    path("<slug:slug>/oidc/callback/", oidc_views.callback, name="oidc-callback"),
    path("<slug:slug>/oidc/backchannel-logout/", oidc_views.backchannel_logout,
         name="oidc-backchannel-logout"),
]
