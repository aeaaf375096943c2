"""Browser-facing views and middleware, through Django's test client (real Redis sessions)."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from broker.login import complete_login
from broker.models import AuditEvent
from broker.services import roles as role_service

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in(client, make_idp, make_role, make_principal):
    """A client whose session came out of complete_login (as an ACS/callback view would)."""
    make_idp("corp")
    make_role("portal_admin", grants_superuser=True)
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="t")
    principal = make_principal(attributes={"mail": "alice@corp.example", "isMemberOf": ["api_admins"]})

    from django.urls import path

    def finish(request):
        return complete_login(request, principal, request.GET.get("next"))

    # Mount the finishing step on a test-only URL so the real middleware stack runs.
    import portal_sso.urls as root

    with override_settings(ROOT_URLCONF=type("U", (), {
        "urlpatterns": [path("test-finish/", finish), *root.urlpatterns],
        "handler404": root.handler404, "handler500": root.handler500,
    })):
        response = client.get("/test-finish/?next=/sso/me/")
        assert response.status_code == 302
        yield client


def test_picker_lists_enabled_idps_only(client, make_idp):
    make_idp("corp", name="Corp ADFS")
    make_idp("old", name="Old Shibboleth", enabled=False)
    response = client.get("/sso/?next=/portal/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Corp ADFS" in html and "Old Shibboleth" not in html
    assert "/sso/corp/login/?next=/portal/" in html


def test_picker_does_not_carry_unsafe_next(client, make_idp):
    make_idp("corp")
    html = client.get("/sso/?next=//evil.com").content.decode()
    assert "evil.com" not in html


def test_me_is_401_json_when_anonymous(client):
    response = client.get("/sso/me/")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_me_shows_user_idp_subject_roles(logged_in):
    body = logged_in.get("/sso/me/").json()
    assert body["idp"] == "corp"
    assert body["subject"] == "alice"
    assert body["roles"] == ["portal_admin"]
    assert body["email"] == "alice@corp.example"


def test_logout_needs_post_and_is_audited(logged_in):
    page = logged_in.get("/sso/logout/")
    assert page.status_code == 200 and b"<form" in page.content
    assert logged_in.get("/sso/me/").status_code == 200  # GET did not log out
    response = logged_in.post("/sso/logout/", {"next": "https://evil.com/"})
    assert response.status_code == 302 and response["Location"] == "/sso/"
    assert logged_in.get("/sso/me/").status_code == 401
    event = AuditEvent.objects.get(action="logout")
    assert (event.idp, event.subject, event.actor) == ("corp", "alice", "corp.alice")


@pytest.mark.parametrize("slug,status,code", [("nope", 404, "idp_unknown"), ("old", 403, "idp_disabled")])
def test_login_to_unknown_or_disabled_idp_is_refused_and_audited(client, make_idp, slug, status, code):
    make_idp("old", enabled=False)
    response = client.get(f"/sso/{slug}/login/?next=/x")
    assert response.status_code == status
    assert code.encode() in response.content
    assert b"Traceback" not in response.content
    event = AuditEvent.objects.get(action="login.failed")
    assert (event.reason, event.idp) == (code, slug)
    assert event.request_id == response["X-Request-ID"]


def test_request_id_is_echoed_when_well_formed_and_replaced_otherwise(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123").headers["X-Request-ID"] == "abc-123"
    generated = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\r\n").headers["X-Request-ID"]
    assert generated != "bad id\r\n" and len(generated) == 32


@override_settings(TRUSTED_PROXIES=["10.0.0.0/8"])
def test_source_ip_trusts_forwarded_for_only_from_trusted_proxies(client):
    from broker.middleware import _trusted_networks

    _trusted_networks.cache_clear()
    try:
        client.get("/sso/nope/login/", REMOTE_ADDR="10.1.2.3",
                   HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9, 10.9.9.9")
        client.get("/sso/nope/login/", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="6.6.6.6")
    finally:
        _trusted_networks.cache_clear()
    ips = list(AuditEvent.objects.order_by("id").values_list("source_ip", flat=True))
    assert ips == ["203.0.113.9", "198.51.100.7"]


def test_idle_session_expires_and_is_audited(logged_in, settings):
    session = logged_in.session
    session["broker_seen_at"] = int(time.time()) - settings.SESSION_IDLE_TIMEOUT - 5
    session.save()
    assert logged_in.get("/sso/me/").status_code == 401
    assert AuditEvent.objects.filter(action="session.expired", reason="session_idle_timeout").exists()


def test_session_expires_at_absolute_maximum_even_when_active(logged_in, settings):
    session = logged_in.session
    session["broker_auth_at"] = int(time.time()) - settings.SESSION_MAX_AGE - 5
    session.save()
    assert logged_in.get("/sso/me/").status_code == 401
    assert AuditEvent.objects.filter(action="session.expired", reason="session_max_age").exists()


def test_unknown_url_gets_the_error_page_without_debug_details(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert b"not_found" in response.content
