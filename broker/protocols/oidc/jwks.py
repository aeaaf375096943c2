"""The provider's signing keys: cached, refreshed, and never fetched on an attacker's say-so.

* The cached copy (Redis, shared by every node) is the last-known-good: a failed refresh
  keeps it, until it is older than OIDC_JWKS_MAX_STALENESS, then it is dropped.
* A token with an unknown ``kid`` triggers at most one refetch per
  OIDC_JWKS_REFETCH_COOLDOWN for the whole cluster (``cache.add`` is atomic), so a flood
  of random kids costs one request to the provider, not one per token.
* Only ``kid`` and ``alg`` are read from a token header: ``jku``, ``x5u``, ``jwk`` and
  ``x5c`` are ignored, so a token can never point us at a key of its choosing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import lru_cache

import jwt
from django.conf import settings
from django.core.cache import cache

from broker import audit
from broker.errors import LoginError

from .provider import Provider, http_get_json

logger = logging.getLogger("broker.oidc")

_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


@dataclass(frozen=True)
class KeySet:
    keys: tuple[dict, ...]
    fetched_at: float

    @property
    def kids(self) -> list[str]:
        return sorted(str(k.get("kid", "")) for k in self.keys)


def _cache_key(slug: str) -> str:
    return f"oidc:jwks:{slug}"


def cached(slug: str) -> KeySet | None:
    raw = cache.get(_cache_key(slug))
    if not raw:
        return None
    return KeySet(keys=tuple(raw["keys"]), fetched_at=raw["fetched_at"])


def _may_fetch(slug: str) -> bool:
    return bool(cache.add(f"oidc:jwks-cooldown:{slug}", 1, timeout=settings.OIDC_JWKS_REFETCH_COOLDOWN))


def fetch(provider: Provider, *, reason: str) -> KeySet:
    """Fetch the JWKS now, store it as the new last-known-good, audit a change of keys."""
    url = provider.endpoint("jwks_uri")
    document = http_get_json(provider.http(), url, timeout=provider.timeout)
    keys = document.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise LoginError("idp_unavailable", "JWKS has no key list")
    # Private key material has no business in a JWKS: drop such entries outright.
    public = tuple(k for k in keys if not ({"d", "p", "q", "k"} & k.keys()))
    previous = cached(provider.slug)
    keyset = KeySet(keys=public, fetched_at=time.time())
    cache.set(_cache_key(provider.slug), {"keys": list(public), "fetched_at": keyset.fetched_at},
              timeout=None)
    if previous is None or previous.kids != keyset.kids:
        audit.record(
            "idp.jwks_changed", idp=provider.slug, reason=reason,
            kids_added=sorted(set(keyset.kids) - set(previous.kids if previous else [])),
            kids_removed=sorted(set(previous.kids if previous else []) - set(keyset.kids)),
        )
    return keyset


def _usable(keyset: KeySet | None) -> KeySet | None:
    if keyset is None:
        return None
    if time.time() - keyset.fetched_at > settings.OIDC_JWKS_MAX_STALENESS:
        return None
    return keyset


def _find(keyset: KeySet, kid: str | None, alg: str) -> dict | None:
    kty = _KTY.get(alg[:2])
    candidates = [
        k for k in keyset.keys
        if k.get("kty") == kty and k.get("use", "sig") == "sig" and k.get("alg", alg) == alg
    ]
    if kid is not None:
        candidates = [k for k in candidates if k.get("kid") == kid]
    elif len(candidates) > 1:
        return None  # no kid and several keys: ambiguous, refuse
    return candidates[0] if candidates else None


def signing_key(provider: Provider, kid: str | None, alg: str) -> jwt.PyJWK:
    """The provider's key for a token header (kid, alg), refetching within the rules."""
    keyset = _usable(cached(provider.slug))
    stale = keyset is None or time.time() - keyset.fetched_at > settings.OIDC_JWKS_REFRESH_INTERVAL
    if stale and _may_fetch(provider.slug):
        try:
            keyset = fetch(provider, reason="refresh")
        except LoginError as exc:
            logger.warning("JWKS refresh for %s failed (%s); keeping the cached copy",
                           provider.slug, exc.code)
            if keyset is None:
                raise
    if keyset is None:
        raise LoginError("idp_unavailable", "no usable JWKS (provider down, nothing cached)")
    jwk = _find(keyset, kid, alg)
    if jwk is None and _may_fetch(provider.slug):
        # Key rotation at the provider: one refetch, then the kid must be there.
        keyset = fetch(provider, reason="unknown_kid")
        jwk = _find(keyset, kid, alg)
    if jwk is None:
        raise LoginError("invalid_signature", f"no key for kid={kid!r} alg={alg}")
    try:
        return _key_object(json.dumps(jwk, sort_keys=True), alg)
    except jwt.PyJWTError as exc:
        raise LoginError("invalid_signature", f"unusable key {kid!r}: {exc}") from exc


@lru_cache(maxsize=256)
def _key_object(jwk_json: str, alg: str) -> jwt.PyJWK:
    """Parsing a JWK into a key costs more than verifying with it: parse each key once."""
    return jwt.PyJWK(json.loads(jwk_json), algorithm=alg)
