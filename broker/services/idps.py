"""IdP lifecycle shared by the CLI, the admin and the API: enable, disable, remove.

Registration (``add-saml`` / ``add-oidc``) lives with each protocol adapter.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from broker import audit
from broker.models import IdentityProvider
from broker.services.lookup import IdpNotFound, get_idp

__all__ = ["get_idp", "remove", "set_enabled"]


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
