"""mozilla-django-oidc's backend, made per-provider and strict.

The library reads one provider from settings, fetches the JWKS on every login without a
timeout or cache, defaults to HS256, and checks neither ``iss``, ``aud``/``azp``, the
presence of ``exp``/``iat``/``sub`` nor the userinfo ``sub``. ``ProviderBackend`` keeps
its shape (get_token, verify_token, retrieve_matching_jwk, get_userinfo) and fixes each of
these for the provider it is built for. It never creates or matches users: identity is
the broker's job (``broker.identity``), keyed on (idp, sub), never on e-mail.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from typing import Any

import jwt
import requests
from django.contrib.auth import get_user_model
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from broker import audit
from broker.errors import LoginError

from . import jwks
from .provider import ASYMMETRIC, SYMMETRIC, Provider, SecretUnavailable, read_secret

logger = logging.getLogger("broker.oidc")

REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub"]
MAX_TOKEN_BYTES = 16 * 1024


def _jwt_error(exc: jwt.PyJWTError) -> LoginError:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return LoginError("token_expired", str(exc))
    if isinstance(exc, jwt.ImmatureSignatureError):
        return LoginError("token_not_yet_valid", str(exc))
    if isinstance(exc, jwt.InvalidIssuerError):
        return LoginError("oidc_issuer", str(exc))
    if isinstance(exc, jwt.InvalidAudienceError):
        return LoginError("oidc_audience", str(exc))
    if isinstance(exc, (jwt.MissingRequiredClaimError, jwt.InvalidIssuedAtError,
                        jwt.exceptions.InvalidSubjectError, jwt.exceptions.InvalidJTIError)):
        return LoginError("oidc_claims", str(exc))
    if isinstance(exc, jwt.DecodeError) and "must be" in str(exc):
        return LoginError("oidc_claims", str(exc))  # e.g. "exp must be an integer"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return LoginError("oidc_algorithm", str(exc))
    return LoginError("invalid_signature", f"{type(exc).__name__}: {exc}")


class ProviderBackend(OIDCAuthenticationBackend):
    """The code flow's back-channel half for one provider."""

    def __init__(self, provider: Provider) -> None:
        # The parent's __init__ reads global settings; everything comes from ``provider``.
        self.provider = provider
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = provider.client_id
        self.OIDC_OP_TOKEN_ENDPOINT = provider.endpoint("token_endpoint")
        self.OIDC_OP_USER_ENDPOINT = provider.discovery.get("userinfo_endpoint")
        self.OIDC_OP_JWKS_ENDPOINT = provider.discovery.get("jwks_uri")
        self.secret_used = ""

    def get_settings(self, attr: str, *args: Any) -> Any:  # type: ignore[override]
        values = {"OIDC_TIMEOUT": self.provider.timeout, "OIDC_USE_NONCE": True,
                  "OIDC_ALLOW_UNSECURED_JWT": False, "OIDC_VERIFY_KID": True}
        if attr in values:
            return values[attr]
        if args:
            return args[0]
        raise AttributeError(attr)

    # --- token endpoint ------------------------------------------------------------------
    def _client_auth(self, data: dict, secret: str) -> tuple[dict, tuple[str, str] | None]:
        method = self.provider.auth_method
        if method == "client_secret_basic":
            return data, (requests.utils.quote(self.provider.client_id, safe=""),
                          requests.utils.quote(secret, safe=""))
        if method == "private_key_jwt":
            now = int(time.time())
            assertion = jwt.encode(
                {"iss": self.provider.client_id, "sub": self.provider.client_id,
                 "aud": self.OIDC_OP_TOKEN_ENDPOINT, "jti": secrets.token_urlsafe(16),
                 "iat": now, "exp": now + 60},
                secret, algorithm="RS256",
            )
            return {**data, "client_assertion_type":
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": assertion}, None
        return {**data, "client_secret": secret}, None

    def _credentials(self) -> list[tuple[str, str]]:
        cfg = self.provider.idp.config
        try:
            if self.provider.auth_method == "private_key_jwt":
                return [("private_key", read_secret(file=cfg.get("private_key_file", "")))]
            return self.provider.secrets()
        except SecretUnavailable as exc:
            raise LoginError("invalid_client", f"client credential unavailable: {exc}") from exc

    def get_token(self, payload: dict) -> dict:
        """Exchange the code; on ``invalid_client`` retry once with the secondary secret."""
        payload = {**payload, "client_id": self.provider.client_id}
        payload.pop("client_secret", None)
        credentials = self._credentials()
        if not credentials:
            raise LoginError("invalid_client", "no client secret configured")
        session = self.provider.http()
        last_error = ""
        for label, secret in credentials:
            data, auth = self._client_auth(payload, secret)
            try:
                response = session.post(self.OIDC_OP_TOKEN_ENDPOINT, data=data, auth=auth,
                                        timeout=self.provider.timeout,
                                        headers={"Accept": "application/json"})
            except requests.exceptions.SSLError as exc:
                raise LoginError("OIDC_CERT_ERR", "token endpoint") from exc
            except requests.RequestException as exc:
                raise LoginError("idp_unavailable", f"token endpoint: {type(exc).__name__}") from exc
            try:
                body = response.json()
            except ValueError:
                body = {}
            if response.status_code == 200 and isinstance(body, dict) and body.get("id_token"):
                self.secret_used = label
                if label == "secondary":
                    audit.record("oidc.secondary_secret_used", idp=self.provider.slug,
                                 reason="invalid_client")
                return body
            error = body.get("error", "") if isinstance(body, dict) else ""
            if error == "invalid_client" or response.status_code == 401:
                last_error = "invalid_client"
                continue  # maybe the secret was rotated: try the next one
            if error == "invalid_grant":
                raise LoginError("invalid_grant", str(body.get("error_description", ""))[:200])
            if response.status_code >= 500:
                raise LoginError("idp_unavailable", f"token endpoint HTTP {response.status_code}")
            raise LoginError("oidc_error", f"token endpoint: {error or response.status_code}")
        raise LoginError("invalid_client", last_error)

    # --- ID token ---------------------------------------------------------------------------
    def retrieve_matching_jwk(self, token: str) -> jwt.PyJWK:
        header = jwt.get_unverified_header(token)
        return jwks.signing_key(self.provider, header.get("kid"), header.get("alg", ""))

    def key_for(self, header: dict, alg: str) -> Any:
        """The verification key for a token whose (unverified) JOSE header is ``header``."""
        if alg in SYMMETRIC:
            # HS* only when the provider is explicitly configured for it, and the key is our
            # client secret: never a public key from the JWKS (key-type confusion).
            if self.provider.auth_method == "private_key_jwt":
                raise LoginError("oidc_algorithm", "HS* needs a client secret")
            credentials = dict(self._credentials())
            return credentials.get(self.secret_used or "primary", next(iter(credentials.values()))).encode()
        return jwks.signing_key(self.provider, header.get("kid"), alg)

    def verify_token(self, token: str, **kwargs: Any) -> dict:  # type: ignore[override]
        """Verify an ID token fully: alg allow-list, signature, iss, aud/azp, exp/iat/nbf
        (with the provider's skew), sub, nonce."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            raise LoginError("oidc_claims", "missing, malformed or oversized ID token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise LoginError("invalid_signature", "malformed token") from exc
        alg = header.get("alg")
        allowed = self.provider.algorithms
        if not isinstance(alg, str) or alg == "none" or alg not in allowed or alg not in (
            *ASYMMETRIC, *SYMMETRIC
        ):
            raise LoginError("oidc_algorithm", f"alg {alg!r} not allowed (allowed: {', '.join(allowed)})")
        key = self.key_for(header, alg)
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.provider.client_id,
                issuer=self.provider.issuer, leeway=self.provider.skew,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise _jwt_error(exc) from exc
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and "azp" not in claims:
            raise LoginError("oidc_audience", "several audiences and no azp")
        if "azp" in claims and claims["azp"] != self.provider.client_id:
            raise LoginError("oidc_audience", "azp is another client")
        if not isinstance(claims["sub"], str) or not claims["sub"].strip():
            raise LoginError("oidc_claims", "empty sub")
        nonce = kwargs.get("nonce")
        if nonce is not None:
            token_nonce = claims.get("nonce")
            if not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce, nonce):
                raise LoginError("oidc_nonce")
        return claims

    # --- userinfo ---------------------------------------------------------------------------
    def get_userinfo(self, access_token: str, id_token: str, payload: dict) -> dict:
        """Userinfo claims, only when its ``sub`` is the ID token's ``sub``."""
        url = self.OIDC_OP_USER_ENDPOINT
        if not url or not access_token or not self.provider.idp.config.get("userinfo", True):
            return {}
        try:
            response = self.provider.http().get(
                url, headers={"Authorization": f"Bearer {access_token}"}, timeout=self.provider.timeout)
            response.raise_for_status()
        except requests.exceptions.SSLError as exc:
            raise LoginError("OIDC_CERT_ERR", "userinfo endpoint") from exc
        except requests.RequestException as exc:
            raise LoginError("idp_unavailable", f"userinfo: {type(exc).__name__}") from exc
        if response.headers.get("content-type", "").lower().startswith("application/jwt"):
            info = self._verify_signed_userinfo(response.text)
        else:
            try:
                info = response.json()
            except ValueError as exc:
                raise LoginError("oidc_error", "userinfo is not JSON") from exc
        if not isinstance(info, dict) or info.get("sub") != payload["sub"]:
            raise LoginError("oidc_userinfo_mismatch")
        return info

    def _verify_signed_userinfo(self, token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise LoginError("invalid_signature", "malformed signed userinfo") from exc
        alg = header.get("alg")
        if alg not in self.provider.algorithms or alg == "none":
            raise LoginError("oidc_algorithm", f"userinfo alg {alg!r}")
        try:
            return jwt.decode(token, self.key_for(header, alg), algorithms=[alg],
                              options={"verify_aud": False, "require": ["sub"]})
        except jwt.PyJWTError as exc:
            raise _jwt_error(exc) from exc
