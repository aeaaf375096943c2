"""IdP lifecycle shared by the CLI, the admin and the API: enable, disable, update, remove.

Registration (``add-saml`` / ``add-oidc``) lives with each protocol adapter.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from broker import audit
from broker.models import IdentityProvider
from broker.services.lookup import IdpNotFound, get_idp

__all__ = ["EDITABLE_FIELDS", "get_idp", "remove", "set_enabled", "update"]

# What may change after registration without re-registering (trust material -- metadata,
# issuer, client -- comes only from registration and refresh).
EDITABLE_FIELDS = (
    "name", "attribute_map", "subject_source", "jit_allowed", "clock_skew_seconds", "legacy_crypto",
)


def set_enabled(slug: str, enabled: bool, *, actor: str | None = None, via: str = "cli") -> bool:
    """Enable or disable an IdP. Returns False when it already was in that state."""
    with transaction.atomic():
        idp = IdentityProvider.objects.select_for_update().filter(slug=slug).first()
        if idp is None:
            raise IdpNotFound(slug)
        if idp.enabled == enabled:
            return False
        before = idp.summary()
        idp.enabled = enabled
        idp.save(update_fields=["enabled", "updated_at"])
        audit.record("idp.enabled" if enabled else "idp.disabled", actor=actor, via=via,
                     idp=slug, before=before, after=idp.summary())
    return True


def remove(slug: str, *, force: bool = False, actor: str | None = None, via: str = "cli") -> None:
    """Remove an IdP. Refused while federated identities are linked to it, unless
    ``force``: then the links go too (the local users stay, and can no longer log in
    through it). Its IdP-specific mappings are removed with it."""
    with transaction.atomic():
        idp = IdentityProvider.objects.select_for_update().filter(slug=slug).first()
        if idp is None:
            raise IdpNotFound(slug)
        links = idp.identities.count()
        if links and not force:
            raise ValidationError(
                f"{links} federated identit{'y is' if links == 1 else 'ies are'} linked to "
                f"{slug!r}; disable it instead, or use --force to unlink them"
            )
        before = idp.summary()
        mappings = [m.summary() for m in idp.role_mappings.select_related("role", "idp")]
        idp.identities.all().delete()
        idp.delete()
        audit.record("idp.removed", actor=actor, via=via, idp=slug, before=before,
                     identities_unlinked=links, mappings_removed=mappings)


def update(slug: str, *, actor: str | None = None, via: str = "cli", **changes) -> IdentityProvider:
    """Change an IdP's editable fields (``EDITABLE_FIELDS``). Audited as ``idp.changed`` with
    before/after; turning legacy crypto on is audited on its own as well."""
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValidationError(f"not editable: {', '.join(unknown)}")
    with transaction.atomic():
        idp = IdentityProvider.objects.select_for_update().filter(slug=slug).first()
        if idp is None:
            raise IdpNotFound(slug)
        before = idp.summary()
        for name, value in changes.items():
            setattr(idp, name, value)
        idp.full_clean()
        after = idp.summary()
        if after == before:
            return idp
        idp.save(update_fields=[*changes, "updated_at"])
        audit.record("idp.changed", actor=actor, via=via, idp=slug, before=before, after=after)
        if after["legacy_crypto"] and not before["legacy_crypto"]:
            audit.record("idp.legacy_crypto_enabled", actor=actor, via=via, idp=slug, reason="legacy_crypto")
    return idp
