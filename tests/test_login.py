"""The login pipeline: identity, role sync (grant AND revoke), audit, session."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from broker.errors import LoginError
from broker.login import SESSION_ROLES, complete_login, login_failed
from broker.models import AuditEvent, FederatedIdentity, UserRole
from broker.services import roles as role_service

pytestmark = pytest.mark.django_db
User = get_user_model()


def _login(session_request, principal, next_url=None):
    request = session_request()
    response = complete_login(request, principal, next_url)
    return request, response


def _roles_of(user) -> set[str]:
    return set(UserRole.objects.filter(user=user).values_list("role__name", flat=True))


def test_roles_are_granted_and_revoked_on_relogin(make_idp, make_role, make_principal, session_request):
    make_idp("corp")
    make_role("portal_admin", grants_superuser=True)
    make_role("auditor", grants_staff=True)
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="t")
    role_service.set_mapping(claim="groups", value="audit", role="auditor", actor="t")

    p1 = make_principal(attributes={"isMemberOf": ["api_admins", "audit"]})
    request, _ = _login(session_request, p1)
    user = User.objects.get(federated_identities__idp__slug="corp",
                            federated_identities__subject="alice")
    assert _roles_of(user) == {"portal_admin", "auditor"}
    assert user.is_superuser and user.is_staff
    assert set(user.groups.values_list("name", flat=True)) == {"role:portal_admin", "role:auditor"}
    assert request.session[SESSION_ROLES] == ["auditor", "portal_admin"]

    # The IdP drops api_admins: the next login revokes portal_admin and superuser status.
    p2 = make_principal(attributes={"isMemberOf": ["audit"]})
    request, _ = _login(session_request, p2)
    user.refresh_from_db()
    assert _roles_of(user) == {"auditor"}
    assert user.is_staff and not user.is_superuser
    assert set(user.groups.values_list("name", flat=True)) == {"role:auditor"}
    event = AuditEvent.objects.filter(action="login.succeeded").last()
    assert event.data["roles_revoked"] == ["portal_admin"]
    assert event.data["roles_granted"] == []

    # No groups at all: every federation role goes.
    _login(session_request, make_principal(attributes={}))
    user.refresh_from_db()
    assert _roles_of(user) == set()
    assert not user.is_staff and not user.is_superuser


def test_manual_roles_and_foreign_groups_are_untouched(make_idp, make_role, make_principal,
                                                       session_request):
    from django.contrib.auth.models import Group

    make_idp("corp")
    ops = make_role("ops", grants_staff=True)
    make_role("dev")
    role_service.set_mapping(claim="groups", value="dev", role="dev", actor="t")
    _login(session_request, make_principal(attributes={"groups": ["dev"]}))
    user = User.objects.get(username__startswith="corp.")
    UserRole.objects.create(user=user, role=ops, source=UserRole.Source.MANUAL)
    unrelated = Group.objects.create(name="not-a-role")
    user.groups.add(unrelated)

    _login(session_request, make_principal(attributes={}))
    user.refresh_from_db()
    assert _roles_of(user) == {"ops"}
    assert user.is_staff  # from the manual role
    assert set(user.groups.values_list("name", flat=True)) == {"role:ops", "not-a-role"}


def test_identity_is_idp_and_subject_never_email(make_idp, make_principal, session_request):
    make_idp("corp")
    make_idp("partner")
    same_mail = {"mail": "shared@example.com"}
    _login(session_request, make_principal("alice", idp="corp", attributes=same_mail))
    _login(session_request, make_principal("alice", idp="partner", attributes=same_mail))
    _login(session_request, make_principal("bob", idp="corp", attributes=same_mail))
    _login(session_request, make_principal("alice", idp="corp", attributes=same_mail))

    links = FederatedIdentity.objects.order_by("idp__slug", "subject")
    assert [(f.idp.slug, f.subject) for f in links] == [
        ("corp", "alice"), ("corp", "bob"), ("partner", "alice")]
    assert len({f.user_id for f in links}) == 3
    assert User.objects.filter(email="shared@example.com").count() == 3


def test_existing_local_user_with_same_email_is_not_taken_over(make_idp, make_principal, session_request):
    make_idp("corp")
    admin = User.objects.create_superuser("root", "root@corp.example", "x" * 20)
    _login(session_request, make_principal("mallory", attributes={"mail": "root@corp.example"}))
    link = FederatedIdentity.objects.get(subject="mallory")
    assert link.user_id != admin.pk
    assert not link.user.is_superuser


def test_session_key_rotates_and_session_describes_login(make_idp, make_principal, session_request):
    make_idp("corp")
    request = session_request()
    request.session["pre_login"] = "x"
    request.session.save()
    before = request.session.session_key
    response = complete_login(request, make_principal(attributes={"mail": "a@corp.example"}), "/portal/")
    assert request.session.session_key != before
    assert request.session["broker_idp"] == "corp"
    assert request.session["broker_subject"] == "alice"
    assert response.status_code == 302 and response["Location"] == "/portal/"


@pytest.mark.parametrize("target", ["//evil.com", "https:evil.com", "/\\evil.com", "javascript:alert(1)"])
def test_unsafe_next_lands_on_default_page(make_idp, make_principal, session_request, target):
    make_idp("corp")
    _, response = _login(session_request, make_principal(), target)
    assert response["Location"] == "/sso/me/"


def test_jit_off_refuses_unknown_subject_and_audits(make_idp, make_principal, session_request):
    make_idp("corp", jit_allowed=False)
    request = session_request()
    with pytest.raises(LoginError) as excinfo:
        complete_login(request, make_principal())
    assert excinfo.value.code == "unknown_user"
    assert not User.objects.exists()
    response = login_failed(request, excinfo.value, idp="corp", subject="alice")
    assert response.status_code == 403
    assert b"unknown_user" in response.content
    event = AuditEvent.objects.get(action="login.failed")
    assert (event.reason, event.idp, event.subject, event.outcome) == (
        "unknown_user", "corp", "alice", "failure")


def test_disabled_idp_and_inactive_user_are_refused(make_idp, make_principal, session_request):
    idp = make_idp("corp")
    _login(session_request, make_principal())
    User.objects.update(is_active=False)
    with pytest.raises(LoginError) as excinfo:
        _login(session_request, make_principal())
    assert excinfo.value.code == "account_disabled"
    idp.enabled = False
    idp.save()
    with pytest.raises(LoginError) as excinfo:
        _login(session_request, make_principal())
    assert excinfo.value.code == "idp_disabled"


def test_local_password_account_cannot_be_reached_through_sso(make_idp, make_principal, session_request):
    idp = make_idp("corp")
    local = User.objects.create_user("breakglass1", password="y" * 24)
    FederatedIdentity.objects.create(idp=idp, subject="alice", user=local)
    with pytest.raises(LoginError) as excinfo:
        _login(session_request, make_principal())
    assert excinfo.value.code == "account_not_federated"


def test_redis_stopped_mid_login_fails_closed_and_keeps_nothing(
    make_idp, make_role, make_principal, session_request, redis_process
):
    make_idp("corp")
    make_role("dev")
    role_service.set_mapping(claim="groups", value="dev", role="dev", actor="t")
    events_before = AuditEvent.objects.count()
    with override_settings(CACHES=redis_process.cache_settings()):
        request = session_request()  # the browser's session lives in this Redis
        redis_process.stop()  # ... which goes down before the IdP's response arrives
        with pytest.raises(LoginError) as excinfo:
            complete_login(request, make_principal(attributes={"groups": ["dev"]}))
    assert excinfo.value.code == "backend_unavailable"
    assert excinfo.value.status == 503
    # Nothing of the half-done login survives: no user, no roles, no success event.
    assert not User.objects.exists()
    assert not UserRole.objects.exists()
    assert AuditEvent.objects.count() == events_before


def test_regex_mapping_matches_whole_value_only(make_idp, make_role, make_principal, session_request):
    make_idp("corp")
    make_role("team_lead")
    role_service.set_mapping(claim="groups", value=r"team-[a-z]+-leads", role="team_lead",
                             regex=True, actor="t")
    _login(session_request, make_principal("u1", attributes={"groups": ["team-api-leads"]}))
    _login(session_request, make_principal("u2", attributes={"groups": ["xteam-api-leads-extra"]}))
    assert _roles_of(FederatedIdentity.objects.get(subject="u1").user) == {"team_lead"}
    assert _roles_of(FederatedIdentity.objects.get(subject="u2").user) == set()


def test_idp_scoped_mapping_applies_only_to_that_idp(make_idp, make_role, make_principal, session_request):
    make_idp("corp")
    make_idp("partner")
    make_role("portal_admin")
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", idp="corp",
                             actor="t")
    claims = {"groups": ["api_admins"]}
    _login(session_request, make_principal("a", idp="corp", attributes=claims))
    _login(session_request, make_principal("a", idp="partner", attributes=claims))
    corp_user = FederatedIdentity.objects.get(idp__slug="corp").user
    partner_user = FederatedIdentity.objects.get(idp__slug="partner").user
    assert _roles_of(corp_user) == {"portal_admin"}
    assert _roles_of(partner_user) == set()
