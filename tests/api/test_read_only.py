"""Read-only resources: federated identities, break-glass accounts (no secrets), audit events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from broker import audit
from broker.breakglass import accounts
from broker.login import complete_login
from broker.models import AuditEvent, FederatedIdentity
from tests.api.conftest import API, call

pytestmark = pytest.mark.django_db


@pytest.fixture
def identities(api, make_idp, make_principal, session_request):
    make_idp("corp")
    make_idp("partner")
    for idp, subject, groups in (("corp", "alice", ["api_admins"]), ("corp", "bob", []),
                                 ("partner", "alice", ["auditors"])):
        complete_login(session_request(), make_principal(subject=subject, idp=idp,
                                                         attributes={"groups": groups}))


def test_identities_list_filter_and_retrieve(api, identities):
    client = api.admin()
    listed = client.get(f"{API}/identities/").json()
    assert listed["count"] == 3
    # Same subject at two IdPs: two identities (identity is (idp, subject)).
    alices = client.get(f"{API}/identities/", {"subject": "alice"}).json()["results"]
    assert sorted(i["idp"] for i in alices) == ["corp", "partner"]
    assert len({i["username"] for i in alices}) == 2
    corp = client.get(f"{API}/identities/", {"idp": "corp"}).json()["results"]
    assert sorted(i["subject"] for i in corp) == ["alice", "bob"]
    both = client.get(f"{API}/identities/", {"idp": "corp", "subject": "alice"}).json()["results"]
    assert len(both) == 1 and both[0]["roles"] == ["portal_admin"]
    one = client.get(f"{API}/identities/{both[0]['id']}/").json()
    assert one["subject"] == "alice" and one["idp"] == "corp" and "last_attributes" in one
    assert client.get(f"{API}/identities/", {"idp": "none"}).json()["count"] == 0
    assert client.get(f"{API}/identities/999999/").status_code == 404


def test_identities_are_read_only(api, identities):
    identity = FederatedIdentity.objects.first()
    client = api.admin()
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        path = f"{API}/identities/" if method == "POST" else f"{API}/identities/{identity.pk}/"
        response = call(client, method, path, {"subject": "mallory"})
        assert response.status_code == 405, (method, response.status_code)
        assert response.json()["code"] == "method_not_allowed"
    assert FederatedIdentity.objects.filter(pk=identity.pk, subject=identity.subject).exists()


def test_breakglass_accounts_without_secrets(api):
    account, secrets = accounts.create_account("bg-ops", email="ops@corp.example", actor="test",
                                               webauthn_link=False)
    client = api.admin()
    listed = client.get(f"{API}/breakglass-accounts/")
    assert listed.status_code == 200
    [row] = listed.json()["results"]
    assert row["name"] == "bg-ops" and row["enabled"] is True
    assert row["factors"] == {"totp": True, "webauthn": 0} and row["federated"] is False
    one = client.get(f"{API}/breakglass-accounts/bg-ops/")
    assert one.status_code == 200 and one.json()["name"] == "bg-ops"
    for response in (listed, one):
        text = response.content.decode()
        assert secrets.password not in text and secrets.totp_secret not in text
        assert account.user.password not in text and "pbkdf2" not in text
        assert "webauthn_user_id" not in text
    assert client.get(f"{API}/breakglass-accounts/nobody/").status_code == 404
    assert call(client, "DELETE", f"{API}/breakglass-accounts/bg-ops/").status_code == 405


@pytest.fixture
def events(api):
    base = AuditEvent.objects.count()  # what the fixtures recorded, all before ``now``
    now = timezone.now()
    audit.record("login.failed", outcome="failure", actor="", idp="corp", subject="eve",
                 reason="invalid_signature")
    audit.record("login.succeeded", actor="corp.alice", idp="corp", subject="alice")
    audit.record("role.created", actor="cli:root", after={"name": "x"})
    audit.record("login.succeeded", actor="partner.bob", idp="partner", subject="bob")
    return base, now


def test_audit_events_filters(api, events):
    base, now = events
    client = api.auditor()
    response = client.get(f"{API}/audit/events/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == base + 4
    ids = [e["id"] for e in body["results"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    oldest_first = client.get(f"{API}/audit/events/", {"ordering": "id"}).json()["results"]
    assert [e["id"] for e in oldest_first] == sorted(e["id"] for e in oldest_first)

    def actions(**params):
        return [e["action"] for e in client.get(f"{API}/audit/events/", params).json()["results"]]

    assert actions(action="login.failed") == ["login.failed"]
    assert sorted(actions(action="login.*")) == ["login.failed", "login.succeeded", "login.succeeded"]
    assert actions(actor="cli:root") == ["role.created"]
    assert sorted(actions(idp="partner")) == ["login.succeeded"]
    assert actions(outcome="failure", idp="corp") == ["login.failed"]
    assert len(actions(since=now.isoformat())) == 4
    assert client.get(f"{API}/audit/events/", {"until": now.isoformat()}).json()["count"] == base
    assert actions(since=(now + timedelta(minutes=5)).isoformat()) == []
    page = client.get(f"{API}/audit/events/", {"limit": 2}).json()
    assert len(page["results"]) == 2 and page["next"]
    one = client.get(f"{API}/audit/events/{ids[0]}/").json()
    assert one["id"] == ids[0] and set(one) >= {"time", "action", "outcome", "actor", "data", "request_id"}


@pytest.mark.parametrize("params", [
    {"since": "yesterday"}, {"until": "2024-13-45"}, {"since": "9999-12-31T23:59:59-14:00"},
    {"ordering": "time"}, {"actor": "a" * 301}, {"idp": "x\u0000y"},
])
def test_audit_filter_refusals_are_400(api, events, params):
    response = api.auditor().get(f"{API}/audit/events/", params)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"


def test_auditor_cannot_write_anything_and_audit_is_read_only(api, events):
    client = api.auditor()
    for method in ("POST", "PATCH", "DELETE"):
        path = f"{API}/audit/events/" if method == "POST" else f"{API}/audit/events/1/"
        response = call(client, method, path, {"action": "x"})
        assert response.status_code in (403, 405), (method, response.status_code)
    admin = api.admin()
    event = AuditEvent.objects.latest("id")
    assert call(admin, "DELETE", f"{API}/audit/events/{event.pk}/").status_code == 405
    assert AuditEvent.objects.filter(pk=event.pk).exists()
