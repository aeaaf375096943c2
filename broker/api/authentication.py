"""Who is calling the Admin API: a Bearer access token or a browser session.

* ``BearerAuthentication``: a JWT from a configured OpenID Provider, validated locally by
  ``broker.tokens.validate_bearer`` (issuer, JWKS signature, alg allow-list, ``aud`` = this
  API, lifetimes, no ID tokens). Its roles come from the token's claims through the same
  mapping rules as browser logins.
* ``SessionAuthentication``: DRF's, CSRF enforced on unsafe methods. Roles are the session's
  snapshot taken at login (``broker_roles``) or, for sessions without one (break-glass, local
  accounts), the user's ``UserRole`` rows. A Django superuser counts as an admin.

Both produce an ``ApiPrincipal``; permissions only ever look at its roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rest_framework import authentication, exceptions

from broker import context
from broker.login import BACKEND_ERRORS, SESSION_ROLES
from broker.models import UserRole
from broker.tokens import TokenError, validate_bearer

from .exceptions import ServiceUnavailable

REALM = "admin-api"


@dataclass(frozen=True)
class ApiPrincipal:
    """The caller of an API request (DRF's ``request.user``)."""

    username: str
    roles: frozenset[str]
    method: str  # "bearer" or "session"
    idp: str = ""
    subject: str = ""
    is_superuser: bool = False
    user: Any = field(default=None, compare=False, repr=False)

    is_authenticated: ClassVar[bool] = True
    is_anonymous: ClassVar[bool] = False
    is_active: ClassVar[bool] = True

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


def _bearer(request) -> bytes | None:
    header = authentication.get_authorization_header(request)
    scheme, _, credentials = header.partition(b" ")
    if not header or scheme.lower() != b"bearer":
        return None
    return credentials.strip()


class BearerAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <JWT>`` (RFC 6750)."""

    def authenticate(self, request):
        raw = _bearer(request)
        if raw is None:
            return None
        request._bearer_presented = True
        try:
            token = raw.decode("ascii")
        except UnicodeDecodeError:
            token = ""
        if not token:
            raise exceptions.AuthenticationFailed("missing or malformed bearer token", code="invalid_token")
        try:
            identity = validate_bearer(token)
        except TokenError as exc:
            if exc.code == "temporarily_unavailable":
                raise ServiceUnavailable("the token issuer's keys are unavailable; retry later",
                                         code="temporarily_unavailable") from exc
            # The detail (which check failed) goes to the log, not to the caller.
            raise exceptions.AuthenticationFailed("invalid bearer token", code="invalid_token") from exc
        except BACKEND_ERRORS as exc:
            raise ServiceUnavailable("token validation backend unavailable",
                                     code="backend_unavailable") from exc
        principal = ApiPrincipal(
            username=identity.username, roles=frozenset(identity.roles), method="bearer",
            idp=identity.idp, subject=identity.subject,
        )
        context.set_actor(principal.username)
        return principal, identity

    def authenticate_header(self, request) -> str:
        # RFC 6750 3.1: no error code when the request carried no credentials at all.
        if getattr(request, "_bearer_presented", False):
            return f'Bearer realm="{REALM}", error="invalid_token"'
        return f'Bearer realm="{REALM}"'


def session_roles(django_request, user) -> frozenset[str]:
    """A session user's roles: the login snapshot, else the ``UserRole`` rows."""
    session = getattr(django_request, "session", None)
    snapshot = session.get(SESSION_ROLES) if session is not None else None
    if isinstance(snapshot, (list, tuple)):
        return frozenset(str(r) for r in snapshot)
    return frozenset(UserRole.objects.filter(user=user).values_list("role__name", flat=True))


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication (CSRF enforced), yielding an ``ApiPrincipal``."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, _ = result
        try:
            roles = session_roles(request._request, user)
        except BACKEND_ERRORS as exc:
            raise ServiceUnavailable("session backend unavailable", code="backend_unavailable") from exc
        principal = ApiPrincipal(
            username=user.get_username(), roles=roles, method="session",
            is_superuser=bool(user.is_superuser), user=user,
        )
        return principal, None
