"""Roles and mapping rules: add, remove, set, and the ``mapping test`` simulator."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from broker import audit, rbac, sessions
from broker.models import IdentityProvider, Role, RoleMapping
from broker.models.roles import MAX_PATTERN_LENGTH, role_name_validator
from broker.principal import normalize_attributes
from broker.services.lookup import IdpNotFound, RoleNotFound, get_idp

__all__ = [
    "IdpNotFound", "RoleNotFound", "add_role", "remove_mapping", "remove_role", "set_mapping", "simulate",
    "update_mapping", "update_role",
]


def _end_holder_sessions(role: Role) -> int:
    """Sessions carry a snapshot of the roles granted at login; when a role's meaning or a
    rule granting it changes, its holders log in again so the change takes effect now."""
    user_ids = set(role.holders.values_list("user_id", flat=True))
    ended = 0
    for user_id in user_ids:
        ended += sessions.end_sessions(user_id=user_id)
    return ended


def _group_name(role_name: str) -> str:
    return f"role:{role_name}"


def add_role(
    name: str, *, description: str = "", grants_staff: bool = False,
    grants_superuser: bool = False, actor: str | None = None, via: str = "cli",
) -> Role:
    role_name_validator(name)
    with transaction.atomic():
        if Role.objects.filter(name=name).exists():
            raise ValidationError(f"role {name!r} already exists")
        if Group.objects.filter(name=_group_name(name)).exists():
            # Never adopt a group someone else populated (members, permissions).
            raise ValidationError(f"a Django group named {_group_name(name)!r} already exists")
        group = Group.objects.create(name=_group_name(name))
        role = Role.objects.create(
            name=name, description=description, group=group,
            grants_staff=grants_staff or grants_superuser, grants_superuser=grants_superuser,
        )
        rbac.rules_changed()
        audit.record("role.created", actor=actor, via=via, after=role.summary())
    return role


def update_role(
    role: Role, *, description: str, grants_staff: bool, grants_superuser: bool,
    actor: str | None = None, via: str = "cli",
) -> Role:
    """Change a role's description or admin flags; holders get the new flags now."""
    with transaction.atomic():
        before = Role.objects.get(pk=role.pk).summary()
        role.description = description
        role.grants_superuser = grants_superuser
        role.grants_staff = grants_staff or grants_superuser
        role.save(update_fields=["description", "grants_staff", "grants_superuser"])
        users = {h.user_id: h.user for h in role.holders.select_related("user")}
        for user in users.values():
            rbac.apply_role_effects(user)
        ended = _end_holder_sessions(role)
        rbac.rules_changed()
        audit.record("role.changed", actor=actor, via=via, before=before, after=role.summary(),
                     sessions_ended=ended)
    return role


def remove_role(name: str, *, force: bool = False, actor: str | None = None, via: str = "cli") -> int:
    """Remove a role. Refused while mappings target it unless ``force`` (which removes
    them too). Returns the number of mappings removed. Holders lose the role now."""
    with transaction.atomic():
        role = Role.objects.select_for_update().filter(name=name).first()
        if role is None:
            raise RoleNotFound(name)
        mappings = list(role.mappings.select_related("idp", "role"))
        if mappings and not force:
            raise ValidationError(
                f"role {name!r} is the target of {len(mappings)} mapping(s); "
                "remove them first or use --force"
            )
        holders = list(role.holders.select_related("user"))
        ended = _end_holder_sessions(role)
        removed = [m.summary() for m in mappings]
        for mapping in mappings:
            mapping.delete()
        group = role.group
        role.delete()  # cascades to UserRole rows
        for user in {h.user_id: h.user for h in holders}.values():
            rbac.apply_role_effects(user)
        group.delete()
        rbac.rules_changed()
        audit.record(
            "role.removed", actor=actor, via=via, before=role.summary(),
            mappings_removed=removed,
            holders=sorted({h.user.get_username() for h in holders}), sessions_ended=ended,
        )
    return len(mappings)


def _resolve_idp(slug: str | None) -> IdentityProvider | None:
    return get_idp(slug) if slug else None


def _checked_rule(claim: str, value: str, regex: bool) -> str:
    """Validate a rule's claim and value; returns the stripped claim."""
    claim = claim.strip()
    if not claim:
        raise ValidationError("claim must not be empty")
    if not value or len(value) > MAX_PATTERN_LENGTH:
        raise ValidationError(f"value must be 1 to {MAX_PATTERN_LENGTH} characters")
    if regex:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValidationError(f"invalid regular expression: {exc}") from exc
    return claim


def set_mapping(
    *, claim: str, value: str, role: str, idp: str | None = None, regex: bool = False,
    actor: str | None = None, via: str = "cli",
) -> tuple[RoleMapping, bool]:
    """Create the mapping (claim, value) -> role; idempotent. Returns (mapping, created).

    Raises ``RoleNotFound`` without touching the database when the role does not exist.
    """
    claim = _checked_rule(claim, value, regex)
    with transaction.atomic():
        role_obj = Role.objects.filter(name=role).first()
        if role_obj is None:
            raise RoleNotFound(role)
        idp_obj = _resolve_idp(idp)
        match = RoleMapping.Match.REGEX if regex else RoleMapping.Match.EXACT
        mapping, created = RoleMapping.objects.get_or_create(
            idp=idp_obj, claim=claim, value=value, match=match, role=role_obj
        )
        if created:
            rbac.rules_changed()
            audit.record("mapping.created", actor=actor, via=via, after=mapping.summary())
    return mapping, created


def remove_mapping(mapping_id: int, *, actor: str | None = None, via: str = "cli") -> dict:
    with transaction.atomic():
        mapping = RoleMapping.objects.select_related("role", "idp").filter(pk=mapping_id).first()
        if mapping is None:
            raise ValidationError(f"no mapping with id {mapping_id}")
        before = mapping.summary()
        role = mapping.role
        mapping.delete()
        ended = _end_holder_sessions(role)
        rbac.rules_changed()
        audit.record("mapping.removed", actor=actor, via=via, before=before, sessions_ended=ended)
    return before


def update_mapping(
    mapping_id: int, *, claim: str, value: str, role: str, idp: str | None = None, regex: bool = False,
    actor: str | None = None, via: str = "cli",
) -> RoleMapping:
    """Change a mapping in place (same id). Holders of the role it granted before log in again,
    since the change may take that role away from them. Audited as ``mapping.changed``."""
    claim = _checked_rule(claim, value, regex)
    with transaction.atomic():
        mapping = RoleMapping.objects.select_for_update().filter(pk=mapping_id).first()
        if mapping is None:
            raise ValidationError(f"no mapping with id {mapping_id}")
        role_obj = Role.objects.filter(name=role).first()
        if role_obj is None:
            raise RoleNotFound(role)
        idp_obj = _resolve_idp(idp)
        match = RoleMapping.Match.REGEX if regex else RoleMapping.Match.EXACT
        duplicate = RoleMapping.objects.filter(
            idp=idp_obj, claim=claim, value=value, match=match, role=role_obj
        ).exclude(pk=mapping.pk)
        if duplicate.exists():
            raise ValidationError(f"an identical mapping exists (#{duplicate.first().pk})", code="unique")
        before, old_role = mapping.summary(), mapping.role
        mapping.idp, mapping.claim, mapping.value, mapping.match, mapping.role = (
            idp_obj, claim, value, match, role_obj)
        if mapping.summary() == before:
            return mapping
        mapping.save(update_fields=["idp", "claim", "value", "match", "role"])
        ended = _end_holder_sessions(old_role)
        rbac.rules_changed()
        audit.record("mapping.changed", actor=actor, via=via, before=before, after=mapping.summary(),
                     sessions_ended=ended)
    return mapping


@dataclass(frozen=True)
class Simulation:
    idp: str | None
    attributes: dict[str, tuple[str, ...]]
    grants: dict[str, list[rbac.Rule]]


def simulate(claims: Mapping[str, Any], idp: str | None = None) -> Simulation:
    """What roles would a login with these claims get? Changes nothing.

    Claims go through the IdP's attribute map (when ``idp`` is given) exactly as at login.
    Without ``idp``, only rules that apply to every IdP are evaluated.
    """
    idp_obj = _resolve_idp(idp)
    attributes = normalize_attributes(claims, idp_obj.attribute_map if idp_obj else None)
    rules = rbac.rules_for_idp(idp_obj) if idp_obj else [
        r for r in rbac.rules_for_idp(None) if r.idp is None
    ]
    grants = rbac.roles_for(idp or "", attributes, rules)
    return Simulation(idp=idp, attributes=attributes, grants=grants)
