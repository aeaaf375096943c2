"""The JWKS cache: refetch on an unknown kid (once per cooldown), last-known-good, maximum
staleness, and entries with private key material dropped. Requests counted at the FakeOP."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from broker.errors import LoginError
from broker.models import AuditEvent, IdentityProvider
from broker.protocols.oidc import jwks
from broker.protocols.oidc.provider import Provider
from tests.oidc.conftest import OidcSetup, assert_login_failed, register_fake

pytestmark = pytest.mark.django_db

CACHE_KEY = "oidc:jwks:op"


def age_cached_jwks(seconds: float) -> None:
    """Pretend the cached JWKS was fetched ``seconds`` ago (instead of sleeping)."""
    record = cache.get(CACHE_KEY)
    assert record and record["keys"]
    record["fetched_at"] = time.time() - seconds
    cache.set(CACHE_KEY, record, timeout=None)


def test_registration_fetches_and_caches_public_keys(oidc: OidcSetup):
    assert oidc.fake.jwks_requests == 1
    record = cache.get(CACHE_KEY)
    assert sorted(k["kid"] for k in record["keys"]) == ["ec-1", "rsa-1"]
    assert abs(record["fetched_at"] - time.time()) < 30
    event = AuditEvent.objects.get(action="idp.jwks_changed")
    assert event.reason == "registration" and event.data["kids_added"] == ["ec-1", "rsa-1"]


def test_logins_with_a_fresh_cache_do_not_fetch(oidc: OidcSetup):
    for _ in range(3):
        assert oidc.login(client=Client()).status_code == 302
    assert oidc.fake.jwks_requests == 1  # the registration's fetch only


def test_unknown_kid_triggers_exactly_one_refetch(oidc: OidcSetup):
    fake = oidc.fake
    before = fake.jwks_requests
    fake.header_overrides = {"kid": "unknown-1"}
    assert_login_failed(oidc, oidc.login(), "invalid_signature")
    assert fake.jwks_requests == before + 1
    assert AuditEvent.objects.filter(action="idp.jwks_changed").count() == 1  # same keys: no new event
    # Another unknown kid inside the cooldown: no further request.
    fake.header_overrides = {"kid": "unknown-2"}
    assert_login_failed(oidc, oidc.login(), "invalid_signature")
    assert fake.jwks_requests == before + 1


def test_flood_of_random_kids_costs_at_most_one_request(oidc: OidcSetup):
    fake = oidc.fake
    before = fake.jwks_requests
    for _ in range(50):
        fake.header_overrides = {"kid": secrets.token_hex(8)}
        response = oidc.login(client=Client())
        assert response.status_code == 400
    assert fake.jwks_requests - before <= 1
    reasons = set(AuditEvent.objects.filter(action="login.failed").values_list("reason", flat=True))
    assert reasons == {"invalid_signature"}
    # Honest logins still work during (and right after) the flood, without fetching.
    fake.header_overrides = {}
    assert oidc.login(client=Client()).status_code == 302
    assert fake.jwks_requests - before <= 1


def test_concurrent_flood_is_one_request_for_the_whole_cluster(oidc: OidcSetup):
    """50 nodes/threads at once: ``cache.add`` makes the cooldown atomic."""
    provider = Provider.from_idp(IdentityProvider.objects.get(slug="op"))
    before = oidc.fake.jwks_requests

    def attempt(_: int) -> str:
        try:
            jwks.signing_key(provider, secrets.token_hex(8), "RS256")
        except LoginError as exc:
            return exc.code
        return "accepted"

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(attempt, range(50)))
    assert set(codes) == {"invalid_signature"}
    assert oidc.fake.jwks_requests - before == 1


def test_key_rotation_at_the_provider_logs_in_after_one_refetch(oidc: OidcSetup):
    fake = oidc.fake
    before = fake.jwks_requests
    new = fake.rotate_key()
    response = oidc.login()
    assert response.status_code == 302, response.content[:500]
    assert fake.jwks_requests == before + 1
    event = AuditEvent.objects.filter(action="idp.jwks_changed").latest("id")
    assert event.reason == "unknown_kid"
    assert event.data["kids_added"] == [new.kid] and event.data["kids_removed"] == ["rsa-1"]
    # The old key is gone from the cache: a token still signed with it fails.
    assert new.kid in {k["kid"] for k in cache.get(CACHE_KEY)["keys"]}
    assert "rsa-1" not in {k["kid"] for k in cache.get(CACHE_KEY)["keys"]}


def test_jwks_down_but_cached_copy_fresh(oidc: OidcSetup):
    oidc.fake.status["jwks"] = 503
    assert oidc.login().status_code == 302
    assert oidc.fake.jwks_requests == 1


def test_jwks_down_and_copy_due_for_refresh_keeps_last_known_good(oidc: OidcSetup):
    fake = oidc.fake
    age_cached_jwks(settings.OIDC_JWKS_REFRESH_INTERVAL + 60)
    fetched_at = cache.get(CACHE_KEY)["fetched_at"]
    fake.status["jwks"] = 503
    before = fake.jwks_requests
    assert oidc.login().status_code == 302
    assert fake.jwks_requests == before + 1  # it tried ...
    assert cache.get(CACHE_KEY)["fetched_at"] == fetched_at  # ... and kept the old copy
    # The failed refresh also counts against the cooldown: no hammering of a sick provider.
    assert oidc.login(client=Client()).status_code == 302
    assert fake.jwks_requests == before + 1


def test_copy_due_for_refresh_is_refreshed_when_provider_up(oidc: OidcSetup):
    age_cached_jwks(settings.OIDC_JWKS_REFRESH_INTERVAL + 60)
    before = oidc.fake.jwks_requests
    assert oidc.login().status_code == 302
    assert oidc.fake.jwks_requests == before + 1
    assert time.time() - cache.get(CACHE_KEY)["fetched_at"] < 30


def test_cached_copy_beyond_max_staleness_and_provider_down(oidc: OidcSetup):
    age_cached_jwks(settings.OIDC_JWKS_MAX_STALENESS + 60)
    oidc.fake.status["jwks"] = 503
    assert_login_failed(oidc, oidc.login(), "idp_unavailable", status=503)


def test_cached_copy_beyond_max_staleness_provider_unreachable(oidc: OidcSetup):
    age_cached_jwks(settings.OIDC_JWKS_MAX_STALENESS + 60)
    idp = IdentityProvider.objects.get(slug="op")
    # Only the JWKS endpoint is unreachable (a closed port); the code exchange works.
    idp.config = {**idp.config, "discovery": {**idp.config["discovery"],
                                              "jwks_uri": "http://127.0.0.1:9/jwks"}}
    idp.save()
    assert_login_failed(oidc, oidc.login(), "idp_unavailable", status=503)


def test_no_cached_copy_and_provider_down(oidc: OidcSetup):
    cache.delete(CACHE_KEY)
    oidc.fake.status["jwks"] = 500
    assert_login_failed(oidc, oidc.login(), "idp_unavailable", status=503)


def test_jwks_entries_with_private_parts_are_dropped(db, fake_op, secrets_env):
    fake_op.publish_private = True  # every published key carries "d" (and p, q, ...)
    fake_op.jwks_extra = [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"}]
    register_fake(fake_op)
    setup = OidcSetup(fake=fake_op, slug="op")
    assert cache.get(CACHE_KEY)["keys"] == []
    assert_login_failed(setup, setup.login(), "invalid_signature")
    # Fixed at the provider: public entries only, the next refetch picks them up.
    fake_op.publish_private = False
    cache.delete("oidc:jwks-cooldown:op")
    assert setup.login(client=Client()).status_code == 302


def test_only_the_private_entry_is_dropped(db, fake_op, secrets_env):
    private_rsa = {**fake_op.signing_rsa.private_jwk(), "kid": "leaked"}
    fake_op.jwks_extra = [private_rsa, {**fake_op.signing_rsa.public_jwk(), "kid": "d-less", "dp": "x"}]
    register_fake(fake_op)
    kids = sorted(k["kid"] for k in cache.get(CACHE_KEY)["keys"])
    assert "leaked" not in kids and {"rsa-1", "ec-1"} <= set(kids)
    assert all("d" not in k for k in cache.get(CACHE_KEY)["keys"])
    setup = OidcSetup(fake=fake_op, slug="op")
    assert setup.login().status_code == 302  # rsa-1 (public) still verifies


def test_token_without_kid_and_several_candidate_keys_is_refused(oidc: OidcSetup):
    from tests.oidc.fake_op import DROP

    oidc.fake.rotate_key(keep_old=True)  # two RSA keys published
    cache.delete(CACHE_KEY)  # pick them up at the next login
    oidc.fake.header_overrides = {"kid": DROP}
    assert_login_failed(oidc, oidc.login(), "invalid_signature")


def test_token_without_kid_and_one_candidate_key(oidc: OidcSetup):
    from tests.oidc.fake_op import DROP

    oidc.fake.header_overrides = {"kid": DROP}
    assert oidc.login().status_code == 302


def test_key_of_the_wrong_type_for_the_alg(oidc: OidcSetup):
    """kid of the EC key on an RS256 token: no RSA key has that kid."""
    oidc.fake.header_overrides = {"kid": "ec-1"}
    assert_login_failed(oidc, oidc.login(), "invalid_signature")
