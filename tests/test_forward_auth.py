"""Forward-auth (/auth/verify) with the broker's session cookie, through Django and through
the bare WSGI fast path that gunicorn serves."""

from __future__ import annotations

import time
from io import BytesIO
from wsgiref.util import setup_testing_defaults

import pytest
from django.conf import settings
from django.test import override_settings

from broker.login import complete_login
from broker.services import roles as role_service

pytestmark = pytest.mark.django_db


@pytest.fixture
def session_cookie(make_idp, make_role, make_principal, session_request):
    make_idp("corp")
    make_role("portal_admin")
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="t")
    request = session_request()
    complete_login(request, make_principal(attributes={"mail": "alice@corp.example",
                                                      "groups": ["api_admins"]}))
    request.session.save()  # what the session middleware does at the end of the response
    return request.session.session_key


def _wsgi(path: str = "/auth/verify", **environ):
    from portal_sso.wsgi import application

    env: dict = {"PATH_INFO": path, "wsgi.input": BytesIO(b"")}
    setup_testing_defaults(env)
    env.update(environ)
    captured = {}

    def start_response(status, headers):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    body = b"".join(application(env, start_response))
    return captured["status"], captured["headers"], body


def test_session_cookie_yields_identity_headers(client, session_cookie):
    client.cookies[settings.SESSION_COOKIE_NAME] = session_cookie
    response = client.get("/auth/verify")
    assert response.status_code == 200
    assert response["X-Auth-User"].startswith("corp.")
    assert response["X-Auth-Email"] == "alice@corp.example"
    assert response["X-Auth-Roles"] == "portal_admin"
    assert response["X-Auth-IdP"] == "corp"


def test_fast_path_gives_the_same_answers(session_cookie):
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie}"
    status, headers, body = _wsgi(HTTP_COOKIE=cookie)
    assert status == 200 and body == b""
    assert headers["X-Auth-Roles"] == "portal_admin" and headers["X-Auth-IdP"] == "corp"
    assert _wsgi(HTTP_COOKIE=cookie, QUERY_STRING="role=portal_admin")[0] == 200
    assert _wsgi(HTTP_COOKIE=cookie, QUERY_STRING="role=auditor")[0] == 403
    assert _wsgi(HTTP_COOKIE=cookie, HTTP_X_AUTH_REQUIRE_ROLE="auditor")[0] == 403
    # A header naming a held role cannot stand in for the role the query requires.
    assert _wsgi(HTTP_COOKIE=cookie, QUERY_STRING="role=auditor",
                 HTTP_X_AUTH_REQUIRE_ROLE="portal_admin")[0] == 403


def test_unauthenticated_gets_401_with_login_url(client):
    response = client.get("/auth/verify", HTTP_X_ORIGINAL_URI="/portal/apis?x=1")
    assert response.status_code == 401
    assert response["X-Auth-Login-URL"] == f"{settings.BASE_URL}/sso/?next=/portal/apis%3Fx%3D1"
    status, headers, _ = _wsgi(HTTP_COOKIE=f"{settings.SESSION_COOKIE_NAME}=nosuchsession",
                               HTTP_X_ORIGINAL_URI="//evil.com")
    assert status == 401 and headers["X-Auth-Login-URL"].endswith("/sso/?next=/")


def test_expired_or_ended_session_is_refused(client, session_cookie):
    from django.contrib.sessions.backends.cache import SessionStore

    store = SessionStore(session_cookie)
    store["broker_seen_at"] = int(time.time()) - settings.SESSION_IDLE_TIMEOUT - 5
    store.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session_cookie
    assert client.get("/auth/verify").status_code == 401


def test_garbage_bearer_token_is_401_not_500(client):
    response = client.get("/auth/verify", HTTP_AUTHORIZATION="Bearer not.a.jwt")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert _wsgi(HTTP_AUTHORIZATION="Bearer " + "x" * 20000)[0] == 401


def test_redis_down_fails_closed_with_503(redis_process, session_cookie):
    with override_settings(CACHES=redis_process.cache_settings()):
        redis_process.stop()
        status, _, _ = _wsgi(HTTP_COOKIE=f"{settings.SESSION_COOKIE_NAME}={session_cookie}")
    assert status == 503
