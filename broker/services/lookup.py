"""Lookups shared by the services, with the "not found" errors the CLI and API report."""

from __future__ import annotations

from broker.models import IdentityProvider


class RoleNotFound(Exception):
    """The brief's "Role Not Found": a mapping may only target an existing role."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Role Not Found: {name}")


class IdpNotFound(Exception):
    def __init__(self, slug: str) -> None:
        self.slug = slug
        super().__init__(f"IdP Not Found: {slug}")


def get_idp(slug: str) -> IdentityProvider:
    idp = IdentityProvider.objects.filter(slug=slug).first()
    if idp is None:
        raise IdpNotFound(slug)
    return idp
