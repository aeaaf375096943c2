"""One OpenID Provider's configuration, from its database row: endpoints from discovery,
client authentication, secrets resolved from their references, the HTTP session to use.

Secrets are never stored in the database: ``client_secret_env`` / ``client_secret_file``
name where they live (a file must be 0600), for the primary and the secondary secret.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from django.conf import settings

from broker.errors import LoginError
from broker.models import IdentityProvider

AUTH_METHODS = ("client_secret_post", "client_secret_basic", "private_key_jwt")
DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256")
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
SYMMETRIC = ("HS256", "HS384", "HS512")
DEFAULT_SCOPES = "openid profile email"


class SecretUnavailable(Exception):
    pass


def read_secret(env: str = "", file: str = "") -> str:
    """Resolve a secret reference. Raises ``SecretUnavailable`` (never shows the value)."""
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise SecretUnavailable(f"environment variable {env} is empty or unset")
        return value
    if file:
        path = Path(file)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError as exc:
            raise SecretUnavailable(f"{file}: {exc.strerror}") from exc
        if mode & 0o077:
            raise SecretUnavailable(f"{file} must not be readable by group or others (mode {mode:o})")
        return path.read_text().strip()
    raise SecretUnavailable("no secret reference configured")


@dataclass(frozen=True)
class Provider:
    idp: IdentityProvider
    issuer: str
    client_id: str
    auth_method: str
    scopes: str
    algorithms: tuple[str, ...]
    discovery: dict[str, Any]

    @classmethod
    def from_idp(cls, idp: IdentityProvider) -> Provider:
        cfg = idp.config
        discovery = cfg.get("discovery") or {}
        if not discovery:
            raise LoginError("idp_unavailable", "no discovery document cached for this provider")
        return cls(
            idp=idp, issuer=cfg["issuer"], client_id=cfg["client_id"],
            auth_method=cfg.get("auth_method", "client_secret_post"),
            scopes=cfg.get("scopes", DEFAULT_SCOPES),
            algorithms=tuple(cfg.get("algorithms") or DEFAULT_ALGORITHMS), discovery=discovery,
        )

    @property
    def slug(self) -> str:
        return self.idp.slug

    @property
    def skew(self) -> int:
        return self.idp.clock_skew

    def endpoint(self, name: str) -> str:
        value = self.discovery.get(name)
        if not value:
            raise LoginError("idp_unavailable", f"discovery has no {name}")
        return value

    def secrets(self) -> list[tuple[str, str]]:
        """[(label, secret)] to try in order: primary, then the secondary (rotation)."""
        cfg = self.idp.config
        found = []
        for label in ("primary", "secondary"):
            prefix = "client_secret" if label == "primary" else "client_secret_secondary"
            env, file = cfg.get(f"{prefix}_env", ""), cfg.get(f"{prefix}_file", "")
            if env or file:
                found.append((label, read_secret(env, file)))
        return found

    def http(self) -> requests.Session:
        """A session for back-channel calls: the provider's CA bundle and mTLS certificate."""
        session = requests.Session()
        cfg = self.idp.config
        session.verify = cfg.get("ca_file") or True
        if cfg.get("ca_file"):
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's CA file;
            # this provider's own bundle must win (proxy variables are then ignored too).
            session.trust_env = False
        if cfg.get("mtls_cert_file") and cfg.get("mtls_key_file"):
            session.cert = (cfg["mtls_cert_file"], cfg["mtls_key_file"])
        session.headers["User-Agent"] = "portal-sso-broker"
        return session

    @property
    def timeout(self) -> int:
        return settings.OIDC_HTTP_TIMEOUT


def http_get_json(session: requests.Session, url: str, *, timeout: int) -> dict:
    """GET a JSON document; TLS trust failures are OIDC_CERT_ERR, the rest idp_unavailable."""
    try:
        response = session.get(url, timeout=timeout)
        response.raise_for_status()
        data = response.json()
    except requests.exceptions.SSLError as exc:
        raise LoginError("OIDC_CERT_ERR", url) from exc
    except (requests.RequestException, ValueError) as exc:
        raise LoginError("idp_unavailable", f"{url}: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise LoginError("idp_unavailable", f"{url}: not a JSON object")
    return data


def settings_timeout() -> int:
    return settings.OIDC_HTTP_TIMEOUT
