"""Every Admin API operation, for every kind of caller: admin token, auditor token, a token
with no API role, no token, refused tokens (expired, other audience, ID tokens, alg none),
browser sessions (admin, plain, break-glass superuser) with CSRF enforced."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from broker.models import AuditEvent, IdentityProvider, Role, RoleMapping
from tests.api.conftest import API, call, csrf_client, endpoints, is_audit_read

pytestmark = pytest.mark.django_db


def _state() -> tuple:
    return (
        sorted(IdentityProvider.objects.values_list("slug", "name", "enabled")),
        sorted(Role.objects.values_list("name", "description")),
        sorted(RoleMapping.objects.values_list("id", "claim", "value")),
    )


def _assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"code", "message"} and body["message"], body
    if code:
        assert body["code"] == code, body
    return body


def test_admin_token_reaches_every_operation(api, world):
    client = api.admin()
    for method, path, body in endpoints(world):
        response = call(client, method, path, body)
        assert response.status_code not in (401, 403), (method, path, response.content[:300])
        assert response.status_code < 500, (method, path, response.content[:300])
    # The destructive tail was carried out, with the token's identity as the audited actor.
    assert not IdentityProvider.objects.filter(slug=world.idp).exists()
    removed = AuditEvent.objects.get(action="idp.removed")
    assert removed.actor == "op:admin-1" and removed.data["via"] == "api"


def test_auditor_token_reads_the_audit_log_only(api, world):
    client = api.auditor()
    before = _state()
    for method, path, body in endpoints(world):
        response = call(client, method, path, body)
        if is_audit_read(method, path):
            assert response.status_code == 200, (method, path, response.content[:300])
        else:
            _assert_error(response, 403, "permission_denied")
    assert _state() == before


def test_token_without_api_role_is_forbidden_everywhere(api, world):
    client = api.plain()
    before = _state()
    for method, path, body in endpoints(world):
        _assert_error(call(client, method, path, body), 403, "permission_denied")
    assert _state() == before
    # Each refusal of a known identity is audited (who, what, with which roles).
    denied = AuditEvent.objects.filter(action="api.denied", actor="op:user-1")
    assert denied.count() == len(endpoints(world))
    assert denied.first().outcome == "failure" and denied.first().data["roles"] == []


def test_no_token_is_401_with_bearer_challenge(api, world):
    client = Client()
    for method, path, body in endpoints(world):
        response = call(client, method, path, body)
        _assert_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"].startswith("Bearer realm=")
        assert "error=" not in response["WWW-Authenticate"]  # RFC 6750 3.1: no credentials, no error


@pytest.mark.parametrize("kind", ["expired", "other_audience", "id_token", "id_token_for_api", "alg_none",
                                  "garbage"])
def test_refused_tokens_are_401_invalid_token(api, world, kind):
    client = api.client(api.bad_tokens()[kind])
    before = _state()
    for method, path, body in endpoints(world):
        response = call(client, method, path, body)
        _assert_error(response, 401, "invalid_token")
        assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert _state() == before


@pytest.mark.parametrize(("kind", "why"), [
    ("expired", "ExpiredSignatureError"), ("other_audience", "InvalidAudienceError"),
    ("id_token", "InvalidAudienceError"), ("id_token_for_api", "an ID token"),
    ("alg_none", "alg"), ("garbage", "malformed"),
])
def test_each_refused_token_fails_for_its_own_reason(api, kind, why):
    """The 401s above are not all the same accident: each token trips the intended check."""
    from broker.tokens import TokenError, validate_bearer

    validate_bearer(api.token())  # the well-formed one passes
    with pytest.raises(TokenError) as refused:
        validate_bearer(api.bad_tokens()[kind])
    assert refused.value.code == "invalid_token"
    assert why in refused.value.detail, refused.value.detail


def test_a_refused_token_is_not_rescued_by_a_session(api, world, session_client):
    client = session_client(("api_admins",))
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api.bad_tokens()['expired']}"
    _assert_error(client.get(f"{API}/roles/"), 401, "invalid_token")


def test_non_bearer_authorization_is_not_authenticated(api, world):
    client = Client(HTTP_AUTHORIZATION="Basic YWRtaW46YWRtaW4=")
    _assert_error(client.get(f"{API}/roles/"), 401, "not_authenticated")


def test_admin_session_reads_and_writes_with_csrf(api, world, session_client):
    client, token = csrf_client(session_client(("api_admins",)))
    for method, path, _ in endpoints(world):
        if method == "GET":
            assert client.get(path).status_code == 200, path
    # Unsafe methods without the CSRF token: refused, nothing changes.
    before = _state()
    for method, path, body in endpoints(world):
        if method != "GET":
            _assert_error(call(client, method, path, body), 403, "csrf_failed")
    assert _state() == before
    # With it: done, and audited with the session user as actor.
    response = call(client, "PATCH", f"{API}/roles/{world.role}/", {"description": "via session"},
                    HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content
    assert Role.objects.get(name=world.role).description == "via session"
    event = AuditEvent.objects.filter(action="role.changed").latest("id")
    assert event.actor.startswith("corp.") and event.data["via"] == "api"


def test_session_without_admin_role_is_forbidden(api, world, session_client):
    client, token = csrf_client(session_client(("viewers",), subject="vera"))
    _assert_error(client.get(f"{API}/roles/"), 403, "permission_denied")
    _assert_error(call(client, "POST", f"{API}/roles/", {"name": "x"}, HTTP_X_CSRFTOKEN=token), 403)


def test_auditor_session_reads_audit_only(api, world, session_client):
    client = session_client(("auditors",), subject="audrey")
    assert client.get(f"{API}/audit/events/").status_code == 200
    _assert_error(client.get(f"{API}/idps/"), 403, "permission_denied")


def test_superuser_session_counts_as_admin_and_roles_come_from_user_roles(api, world):
    User = get_user_model()
    superuser = User.objects.create_user("root-local", is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(superuser)
    assert client.get(f"{API}/idps/").status_code == 200
    # A local user with a manual admin role (no broker_roles in the session): admin too.
    from broker.models import UserRole

    manual = User.objects.create_user("manual-admin")
    UserRole.objects.create(user=manual, role=Role.objects.get(name="portal_admin"),
                            source=UserRole.Source.MANUAL)
    client = Client()
    client.force_login(manual)
    assert client.get(f"{API}/roles/").status_code == 200
    nobody = User.objects.create_user("nobody")
    client = Client()
    client.force_login(nobody)
    _assert_error(client.get(f"{API}/roles/"), 403)


def test_roles_from_the_token_follow_the_mapping_rules(api, world):
    """Remove the rule that makes api_admins admins: the same kind of token is now refused."""
    from broker import tokens
    from broker.services import roles as role_service

    rule = RoleMapping.objects.get(value="api_admins")
    role_service.remove_mapping(rule.pk, actor="test")
    tokens.reset_caches()
    _assert_error(api.admin().get(f"{API}/roles/"), 403)


def test_schema_and_docs_are_served_without_credentials(api):
    client = Client()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert schema.json()["openapi"].startswith("3.")
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs.content
    assert b"cdn" not in docs.content.lower() and b"unpkg" not in docs.content.lower()


def test_removing_the_mapping_revokes_a_token_already_seen(api):
    """A validated token is cached until it expires, but not its roles: a rule change applies
    to the next request."""
    from broker.models import RoleMapping
    from broker.services import roles as role_service

    client = api.client(api.token())
    assert client.get("/api/v1/roles/").status_code == 200
    mapping = RoleMapping.objects.get(role__name="portal_admin", value="api_admins")
    role_service.remove_mapping(mapping.pk, actor="t")
    assert client.get("/api/v1/roles/").status_code == 403
