"""The broker's data model, one module per role."""

from .audit import AuditEvent
from .identity import FederatedIdentity
from .idp import IdentityProvider
from .roles import Role, RoleMapping, UserRole

__all__ = [
    "AuditEvent",
    "FederatedIdentity",
    "IdentityProvider",
    "Role",
    "RoleMapping",
    "UserRole",
]
