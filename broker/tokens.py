"""Bearer JWT validation for the Admin API and forward-auth, local and cached.

An access token is accepted when it comes from a configured OpenID Provider (by its exact
``iss``), is signed with a key from that provider's cached JWKS with an allowed asymmetric
algorithm, is for this API (``aud`` = API_AUDIENCE), is within ``exp``/``nbf``/``iat``
(with the provider's skew), has ``typ`` ``at+jwt`` when a ``typ`` is set, and is not an ID
token. Roles come from its claims through the same mapping rules as browser logins.

The hot path touches neither PostgreSQL nor the network: a validated token is remembered
in process until it expires; provider settings and rules are reloaded at most every
HOT_PATH_CONFIG_TTL seconds; a change of roles or mapping rules is seen within a second.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import jwt
from django.conf import settings

from broker import rbac
from broker.errors import LoginError
from broker.models import IdentityProvider
from broker.principal import normalize_attributes
from broker.protocols.oidc import PROTOCOL_CLAIMS, jwks
from broker.protocols.oidc.provider import ASYMMETRIC, Provider

ACCESS_TOKEN_TYPES = {"at+jwt", "application/at+jwt"}
_CACHE_SIZE = 10_000


class TokenError(Exception):
    """A bearer token was refused; ``code`` names why (RFC 6750 error is invalid_token)."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)


@dataclass(frozen=True)
class TokenIdentity:
    idp: str
    subject: str
    email: str
    roles: tuple[str, ...]
    expires_at: float
    username: str
    issuer: str = ""


@dataclass(frozen=True)
class _Issuer:
    provider: Provider


class _Config:
    """Issuer -> (provider, rules), reloaded from the database at most every TTL seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._issuers: dict[str, _Issuer] = {}

    def issuers(self) -> dict[str, _Issuer]:
        if time.monotonic() - self._loaded_at > settings.HOT_PATH_CONFIG_TTL:
            with self._lock:
                if time.monotonic() - self._loaded_at > settings.HOT_PATH_CONFIG_TTL:
                    self._issuers = self._load()
                    self._loaded_at = time.monotonic()
        return self._issuers

    def _load(self) -> dict[str, _Issuer]:
        qs = IdentityProvider.objects.filter(protocol=IdentityProvider.Protocol.OIDC, enabled=True)
        if settings.API_TOKEN_IDPS:
            qs = qs.filter(slug__in=settings.API_TOKEN_IDPS)
        found = {}
        for idp in qs:
            try:
                provider = Provider.from_idp(idp)
            except LoginError:
                continue  # no discovery cached: cannot validate its tokens
            found[provider.issuer] = _Issuer(provider=provider)
        return found

    def reset(self) -> None:
        with self._lock:
            self._loaded_at = 0.0


config = _Config()
# token digest -> (identity, rules version it was computed with)
_validated: OrderedDict[bytes, tuple[TokenIdentity, object]] = OrderedDict()
_validated_lock = threading.Lock()


def _remember(digest: bytes, identity: TokenIdentity, version: object) -> None:
    with _validated_lock:
        _validated[digest] = (identity, version)
        while len(_validated) > _CACHE_SIZE:
            _validated.popitem(last=False)


def reset_caches() -> None:
    config.reset()
    with _validated_lock:
        _validated.clear()


def validate_bearer(token: str) -> TokenIdentity:
    """The identity a bearer token stands for, or ``TokenError``."""
    if not token or len(token) > settings.API_TOKEN_MAX_BYTES:
        raise TokenError("invalid_token", "missing or oversized token")
    digest = hashlib.sha256(token.encode()).digest()
    remembered = _validated.get(digest)
    version = rbac.rules_version()
    if remembered is not None:
        identity, seen_version = remembered
        # Still valid, its roles computed under the current rules (a removed mapping or role
        # takes effect within a second), and its IdP still configured.
        if identity.expires_at > time.time() and seen_version == version and (
                identity.issuer in config.issuers()):
            return identity
        with _validated_lock:
            _validated.pop(digest, None)
    identity = _validate(token)
    _remember(digest, identity, version)
    return identity


def _validate(token: str) -> TokenIdentity:
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise TokenError("invalid_token", "malformed token") from exc
    issuer = config.issuers().get(unverified.get("iss"))
    if issuer is None:
        raise TokenError("invalid_token", "unknown issuer")
    provider = issuer.provider
    typ = header.get("typ")
    if typ is not None and str(typ).lower() not in ACCESS_TOKEN_TYPES and str(typ).upper() != "JWT":
        raise TokenError("invalid_token", f"typ {typ!r} is not an access token")
    alg = header.get("alg")
    if alg not in provider.algorithms or alg not in ASYMMETRIC:
        raise TokenError("invalid_token", f"alg {alg!r} not allowed")
    try:
        key = jwks.signing_key(provider, header.get("kid"), alg)
    except LoginError as exc:
        raise TokenError("invalid_token" if exc.code == "invalid_signature" else "temporarily_unavailable",
                         exc.code) from exc
    try:
        claims = jwt.decode(
            token, key, algorithms=[alg], audience=settings.API_AUDIENCE, issuer=provider.issuer,
            leeway=provider.skew, options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise TokenError("invalid_token", type(exc).__name__) from exc
    if "nonce" in claims or "at_hash" in claims:
        raise TokenError("invalid_token", "an ID token is not an access token")
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject.strip():
        raise TokenError("invalid_token", "empty sub")
    attributes = normalize_attributes(
        {k: v for k, v in claims.items() if k not in PROTOCOL_CLAIMS and k != "sub"},
        provider.idp.attribute_map,
    )
    roles = tuple(rbac.roles_for(provider.slug, attributes, rbac.current_rules(provider.idp)))
    email = (attributes.get("email") or ("",))[0]
    return TokenIdentity(
        idp=provider.slug, subject=subject, email=email, roles=roles,
        expires_at=float(claims["exp"]), username=f"{provider.slug}:{subject}", issuer=provider.issuer,
    )
