"""Mapping rules -> local roles, and the sync that grants AND revokes them at login.

``roles_for`` is pure (rules in, roles out) so the ``mapping test`` simulator, the admin's
test login and the real login all run the same code.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import transaction

from broker import login_lookup
from broker.login_lookup import HeldRole
from broker.models import IdentityProvider, Role, RoleMapping, UserRole


@dataclass(frozen=True)
class Rule:
    """A mapping rule as plain data. ``idp`` None applies to every IdP."""

    id: int | None
    idp: str | None
    claim: str
    value: str
    match: str
    role: str

    def describe(self) -> str:
        scope = self.idp or "*"
        op = "~" if self.match == RoleMapping.Match.REGEX else "="
        return f"#{self.id} [{scope}] {self.claim} {op} {self.value!r}"


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _matches(rule: Rule, values: Iterable[str]) -> bool:
    if rule.match == RoleMapping.Match.REGEX:
        compiled = _compiled(rule.value)
        # An invalid pattern grants nothing (fail closed); the admin refuses to save one.
        return compiled is not None and any(compiled.fullmatch(v) for v in values)
    return rule.value in values


def roles_for(
    idp: str, attributes: Mapping[str, Iterable[str]], rules: Iterable[Rule]
) -> dict[str, list[Rule]]:
    """Roles a login from ``idp`` with ``attributes`` gets, each with the rules granting it."""
    granted: dict[str, list[Rule]] = {}
    for rule in rules:
        if rule.idp is not None and rule.idp != idp:
            continue
        values = attributes.get(rule.claim)
        if values is None:
            continue
        if isinstance(values, str):
            values = (values,)
        if _matches(rule, tuple(values)):
            granted.setdefault(rule.role, []).append(rule)
    return dict(sorted(granted.items()))


RULES_VERSION_KEY = "rbac:rules-version"
_rules_cache: dict[int | None, tuple[object, list[Rule]]] = {}


def rules_changed() -> None:
    """Call after any change to roles or mapping rules: every node reloads its rules."""
    try:
        cache.incr(RULES_VERSION_KEY)
    except ValueError:
        cache.set(RULES_VERSION_KEY, 1, timeout=None)
    _version_checked[0] = 0.0  # this process sees its own change at once


_version_checked: list = [0.0, 0]


def rules_version(max_age: float = 1.0) -> object:
    """The cluster-wide rules version, read from Redis at most every ``max_age`` seconds
    (for hot paths that cache results derived from the rules)."""
    now = time.monotonic()
    if now - _version_checked[0] > max_age:
        _version_checked[:] = [now, cache.get(RULES_VERSION_KEY, 0)]
    return _version_checked[1]


def current_rules(idp: IdentityProvider | None) -> list[Rule]:
    """``rules_for_idp`` through a per-process cache, invalidated cluster-wide by
    ``rules_changed`` (one Redis read per login instead of a database query)."""
    if settings.EMBEDDED:
        # Local-memory cache: a change made by the CLI (another process) could not reach this
        # process's copy, so read the rules each time (a single node, off the fast path).
        return rules_for_idp(idp)
    version = getattr(idp, "rules_version", None)  # read with the IdP (broker.idp_cache)
    if version is None:
        version = cache.get(RULES_VERSION_KEY, 0)
    key = idp.pk if idp is not None else None
    cached = _rules_cache.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    rules = rules_for_idp(idp)
    _rules_cache[key] = (version, rules)
    return rules


def rules_for_idp(idp: IdentityProvider | None) -> list[Rule]:
    """Rules that may apply to logins from ``idp`` (its own and the global ones)."""
    qs = RoleMapping.objects.select_related("role", "idp")
    if idp is not None:
        qs = qs.filter(idp__isnull=True) | qs.filter(idp=idp)
    return [
        Rule(
            id=m.pk, idp=m.idp.slug if m.idp_id else None, claim=m.claim, value=m.value,
            match=m.match, role=m.role.name,
        )
        for m in qs.order_by("id")
    ]


@dataclass(frozen=True)
class RoleChange:
    roles: list[str]
    granted: list[str]
    revoked: list[str]


def sync_roles(user: AbstractBaseUser, role_names: Iterable[str],
               held: Iterable[HeldRole] | None = None) -> RoleChange:
    """Make the user's federation-sourced roles exactly ``role_names``.

    Grants new ones, revokes those whose claim disappeared; manual roles stay. Then
    rebuilds the user's role groups and staff/superuser flags from all roles held.
    ``held``: the user's roles as read in this transaction (``identity.resolve_user``), else
    they are queried. Must run inside the login transaction.
    """
    wanted = set(role_names)
    current: dict[str, int] = {}
    manual: set[str] = set()
    for name, row_id, source in ((h.name, h.row_id, h.source) for h in
                                 (held if held is not None else login_lookup.held_roles(user))):
        if source == UserRole.Source.FEDERATION:
            current[name] = row_id
        else:
            manual.add(name)
    to_grant = sorted(wanted - current.keys())
    to_revoke = sorted(current.keys() - wanted)
    if not to_grant and not to_revoke:
        # The common case (same groups as last time): groups and flags were derived when
        # the roles last changed (here or by an admin change), so nothing to rebuild.
        return RoleChange(roles=sorted(set(current) | manual), granted=[], revoked=[])
    with transaction.atomic():
        if to_revoke:
            UserRole.objects.filter(id__in=[current[name] for name in to_revoke]).delete()
        if to_grant:
            roles = {r.name: r for r in Role.objects.filter(name__in=to_grant)}
            UserRole.objects.bulk_create(
                [UserRole(user=user, role=roles[n], source=UserRole.Source.FEDERATION)
                 for n in to_grant if n in roles]
            )
        held = apply_role_effects(user)
    return RoleChange(roles=held, granted=to_grant, revoked=to_revoke)


def apply_role_effects(user: AbstractBaseUser) -> list[str]:
    """Derive groups and staff/superuser flags from the roles the user holds now."""
    held_roles = list(Role.objects.filter(holders__user=user).distinct())
    role_groups = set(Group.objects.filter(broker_role__isnull=False).values_list("id", flat=True))
    wanted_groups = {r.group_id for r in held_roles}
    current_groups = set(user.groups.values_list("id", flat=True))
    remove = (current_groups & role_groups) - wanted_groups
    add = wanted_groups - current_groups
    if remove:
        user.groups.remove(*remove)
    if add:
        user.groups.add(*add)
    if not user.federated_identities.exists():
        # Local accounts (createsuperuser, break-glass) keep the flags an admin gave them;
        # roles decide staff/superuser status only for federated users.
        return sorted(r.name for r in held_roles)
    is_superuser = any(r.grants_superuser for r in held_roles)
    is_staff = is_superuser or any(r.grants_staff for r in held_roles)
    if (user.is_staff, user.is_superuser) != (is_staff, is_superuser):
        user.is_staff, user.is_superuser = is_staff, is_superuser
        user.save(update_fields=["is_staff", "is_superuser"])
    return sorted(r.name for r in held_roles)
