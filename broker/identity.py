"""(idp, subject) -> local user. Just-in-time provisioning; never matched on e-mail."""

from __future__ import annotations

import hashlib
import re

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from broker import login_lookup
from broker.errors import LoginError
from broker.login_lookup import HeldRole
from broker.models import FederatedIdentity, IdentityProvider
from broker.principal import Principal

_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")
LAST_LOGIN_RESOLUTION = 60  # seconds: "last login" (user and identity) is kept to the minute


def _username_for(principal: Principal) -> str:
    """A readable, unique-enough local username; cosmetic (the link is the identity)."""
    base = _USERNAME_UNSAFE.sub("_", f"{principal.idp}.{principal.subject}")
    if len(base) <= 140:
        return base
    digest = hashlib.sha256(principal.subject.encode()).hexdigest()[:16]
    return f"{base[:120]}.{digest}"


def _profile_fields(principal: Principal) -> dict[str, str]:
    return {
        "email": (principal.email or "")[:254],
        "first_name": (principal.first("given_name") or "")[:150],
        "last_name": (principal.first("family_name") or "")[:150],
    }


def resolve_user(principal: Principal, idp: IdentityProvider) -> tuple[AbstractBaseUser, list[HeldRole]]:
    """The local user for ``principal``, provisioning one when the IdP allows it, and the
    roles the user holds (for ``rbac.sync_roles``).

    Raises ``LoginError`` when there is no user and JIT is off, or the user is inactive.
    Must run inside the login transaction.
    """
    found = login_lookup.find(idp.pk, principal.subject)
    now = timezone.now()
    attributes = {k: list(v) for k, v in principal.attributes.items()}
    if found is None:
        if not idp.jit_allowed:
            raise LoginError("unknown_user", f"no local user for {idp.slug}:{principal.subject}")
        link = _provision(principal, idp, attributes)
        held = login_lookup.held_roles(link.user)  # none, unless a concurrent first login won the race
    else:
        link, _, held = found
    user = link.user
    if not user.is_active:
        raise LoginError("account_disabled")
    if getattr(user, "has_usable_password", lambda: False)():
        # A local password account (break-glass, createsuperuser) is never an SSO identity.
        raise LoginError("account_not_federated")
    stale = link.last_login_at is None or (now - link.last_login_at).total_seconds() > LAST_LOGIN_RESOLUTION
    if stale or link.last_attributes != attributes:
        # Skipped for a repeat login within a minute with the same attributes: one write less
        # on the hot path, and "last login" stays accurate to the minute.
        link.last_login_at = now
        link.last_attributes = attributes
        link.save(update_fields=["last_login_at", "last_attributes"])
    profile = _profile_fields(principal)
    changed = [name for name, value in profile.items() if getattr(user, name) != value]
    for name in changed:
        setattr(user, name, profile[name])
    if changed:
        user.save(update_fields=changed)
    return user, held


def update_last_login(sender, user: AbstractBaseUser, **kwargs) -> None:
    """``user_logged_in`` receiver replacing Django's: write ``last_login`` only when it is more
    than a minute old (the audit log keeps every login; this is what the admin lists show)."""
    now = timezone.now()
    if user.last_login is None or (now - user.last_login).total_seconds() > LAST_LOGIN_RESOLUTION:
        user.last_login = now
        user.save(update_fields=["last_login"])


def _provision(principal: Principal, idp: IdentityProvider, attributes: dict) -> FederatedIdentity:
    User = get_user_model()
    username = _username_for(principal)
    suffix = 0
    while True:
        candidate = username if suffix == 0 else f"{username[:140]}.{suffix}"
        try:
            with transaction.atomic():
                user = User(username=candidate, **_profile_fields(principal))
                user.set_unusable_password()
                user.save()
                return FederatedIdentity.objects.create(
                    idp=idp, subject=principal.subject, user=user, last_attributes=attributes
                )
        except IntegrityError:
            # Either the username is taken (try the next) or a concurrent first login of the
            # same subject won the race (use its link).
            existing = FederatedIdentity.objects.filter(idp=idp, subject=principal.subject).first()
            if existing is not None:
                return existing
            suffix += 1
            if suffix > 50:
                raise
