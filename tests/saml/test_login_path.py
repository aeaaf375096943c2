"""The login path's shortcuts keep their promises: a cached IdP never outlives a change (made
on this node or another), a login writes its session once and never over another session,
and "last login" is kept to the minute."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import UpdateError
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from broker import idp_cache, session_store
from broker.models import AuditEvent, FederatedIdentity, IdentityProvider
from broker.services import idps
from tests.test_cli import manage

User = get_user_model()


def _refused_codes() -> list[str]:
    return list(AuditEvent.objects.filter(action="login.failed").values_list("reason", flat=True))


def _started(saml):
    """A login begun while the IdP is enabled: (response XML, RelayState) to POST later."""
    request, relay_state = saml.start()
    return saml.response_for(request), relay_state


# --- cached IdPs -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # committed rows: what the cache keeps
def test_disabling_an_idp_is_seen_by_the_next_login(saml):
    assert saml.login().status_code == 302  # the IdP row is now cached in this process
    pending = _started(saml)
    idps.set_enabled("corp", False, actor="test")
    assert saml.post(*pending).status_code == 403  # at the ACS, not only at the start
    assert _refused_codes() == ["idp_disabled"]


@pytest.mark.django_db(transaction=True)
def test_a_change_made_by_another_process_is_seen_by_the_next_login(saml):
    """Another node (here: the CLI, a separate process) disables the IdP this process has cached."""
    assert saml.login().status_code == 302
    pending = _started(saml)
    proc = manage("idp", "disable", "corp")
    assert proc.returncode == 0, proc.stderr
    assert saml.post(*pending).status_code == 403
    assert _refused_codes() == ["idp_disabled"]
    proc = manage("idp", "enable", "corp")
    assert proc.returncode == 0, proc.stderr
    assert saml.login().status_code == 302


@pytest.mark.django_db(transaction=True)
def test_a_lost_version_key_drops_what_was_cached(saml):
    """Redis lost the version (restart without persistence): nothing cached before is trusted."""
    assert saml.login().status_code == 302
    pending = _started(saml)
    # A change this process was never told about (no signal), then the version disappears.
    IdentityProvider.objects.filter(slug="corp").update(enabled=False)
    cache.delete(idp_cache._VERSION_KEY)
    assert saml.post(*pending).status_code == 403
    assert _refused_codes() == ["idp_disabled"]


@pytest.mark.django_db(transaction=True)
def test_no_cached_row_outlives_the_maximum_age(saml, settings, monkeypatch):
    """A change that never reached the other nodes (publishing it failed) is seen anyway
    after HOT_PATH_CONFIG_TTL seconds."""
    settings.HOT_PATH_CONFIG_TTL = 30
    assert saml.login().status_code == 302
    pending = _started(saml)
    IdentityProvider.objects.filter(slug="corp").update(enabled=False)  # no signal: unpublished
    later = time.monotonic() + 31
    monkeypatch.setattr(idp_cache.time, "monotonic", lambda: later)
    assert saml.post(*pending).status_code == 403
    assert _refused_codes() == ["idp_disabled"]


@pytest.mark.django_db(transaction=True)
def test_a_row_read_inside_a_transaction_is_not_kept(saml):
    """What a transaction saw may be rolled back: only committed reads are cached."""
    idp_cache.changed()  # nothing cached now
    with transaction.atomic():
        IdentityProvider.objects.filter(slug="corp").update(name="Renamed")  # no signal
        assert idp_cache.get("corp").name == "Renamed"
        transaction.set_rollback(True)
    assert idp_cache.get("corp").name == "Corp"


@pytest.mark.django_db
def test_callers_get_a_private_copy(saml):
    first = idp_cache.get("corp")
    first.config["entity_id"] = "https://evil.example/idp"
    first.enabled = False
    second = idp_cache.get("corp")
    assert second.enabled and second.config["entity_id"] == saml.idp.entity_id
    assert idp_cache.get("corp", IdentityProvider.Protocol.OIDC) is None
    assert idp_cache.get("nope") is None


# --- sessions ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_login_moves_an_anonymous_session_to_a_new_key_and_deletes_the_old_one(saml):
    anonymous = saml.client.session
    anonymous["theme"] = "dark"
    anonymous.save()
    old_key = anonymous.session_key
    assert saml.login().status_code == 302
    new_key = saml.client.cookies[settings.SESSION_COOKIE_NAME].value
    assert new_key != old_key
    assert not session_store.SessionStore().exists(old_key)
    stored = session_store.SessionStore(new_key).load()
    assert stored["theme"] == "dark" and stored["broker_subject"] == "alice"


@pytest.mark.django_db
def test_a_new_session_key_never_overwrites_an_existing_session(saml, monkeypatch):
    """Fault injection (random keys do not collide in practice): the first key drawn for the
    login is one another user's session already holds."""
    victim = session_store.SessionStore()
    victim["broker_subject"] = "bob"
    victim.create()
    keys = iter([victim.session_key])
    original = session_store.SessionStore._get_new_session_key
    monkeypatch.setattr(session_store.SessionStore, "_get_new_session_key",
                        lambda self: next(keys, None) or original(self))
    assert saml.login().status_code == 302
    new_key = saml.client.cookies[settings.SESSION_COOKIE_NAME].value
    assert new_key != victim.session_key
    assert session_store.SessionStore(victim.session_key).load()["broker_subject"] == "bob"
    assert saml.client.get("/sso/me/").json()["subject"] == "alice"


@pytest.mark.django_db
def test_a_session_ended_elsewhere_is_not_brought_back_by_a_later_save(saml):
    assert saml.login().status_code == 302
    key = saml.client.cookies[settings.SESSION_COOKIE_NAME].value
    late = session_store.SessionStore(key)
    assert late["broker_subject"] == "alice"  # a request on this node has read the session
    session_store.SessionStore(key).delete()  # e.g. a logout on another node
    late["broker_seen_at"] = 1
    late.modified = True
    with pytest.raises(UpdateError):
        late.save()
    assert not session_store.SessionStore().exists(key)


# --- last login ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_last_login_is_kept_to_the_minute(saml):
    assert saml.login().status_code == 302
    user = FederatedIdentity.objects.get(subject="alice").user
    first = user.last_login
    assert first is not None and abs((timezone.now() - first).total_seconds()) < 60
    assert saml.login().status_code == 302
    user.refresh_from_db()
    assert user.last_login == first  # within the minute: not rewritten
    User.objects.filter(pk=user.pk).update(last_login=first - dt.timedelta(minutes=5))
    assert saml.login().status_code == 302
    user.refresh_from_db()
    assert user.last_login > first


@pytest.mark.django_db
def test_a_repeat_login_in_the_same_browser_gets_a_new_session_key(saml):
    """Django keeps the key when the session already belongs to the same user; we rotate it."""
    assert saml.login().status_code == 302
    first = saml.client.cookies[settings.SESSION_COOKIE_NAME].value
    assert saml.login().status_code == 302
    second = saml.client.cookies[settings.SESSION_COOKIE_NAME].value
    assert second != first
    assert not session_store.SessionStore().exists(first)
    assert saml.client.get("/sso/me/").json()["subject"] == "alice"


@pytest.mark.django_db
def test_a_login_failing_in_the_session_store_writes_no_session(saml, monkeypatch):
    """Fault injection: Redis fails after the session data was prepared (the registry write).
    The login is undone (503, no audit event) and no session holds any of it."""
    import redis.exceptions

    from broker import sessions

    assert saml.login().status_code == 302
    before = saml.client.cookies[settings.SESSION_COOKIE_NAME].value
    succeeded = AuditEvent.objects.filter(action="login.succeeded").count()

    def fail(*args, **kwargs):
        raise redis.exceptions.ConnectionError("injected")

    monkeypatch.setattr(sessions, "register", fail)
    response = saml.login()
    assert response.status_code == 503
    assert _refused_codes() == ["backend_unavailable"]
    assert AuditEvent.objects.filter(action="login.succeeded").count() == succeeded
    after = saml.client.cookies[settings.SESSION_COOKIE_NAME].value
    assert after == before  # no new session cookie was set
    assert not session_store.SessionStore().exists(before)  # rotated away: logged out
    assert saml.client.get("/sso/me/").status_code == 401
