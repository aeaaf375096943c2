"""The broker's data model, one module per role."""

from .audit import AuditEvent
from .breakglass import (
    BreakGlassAccount,
    BreakGlassEnrollment,
    BreakGlassSecurityKey,
    BreakGlassThrottle,
)
from .identity import FederatedIdentity
from .idp import IdentityProvider
from .roles import Role, RoleMapping, UserRole

__all__ = [
    "AuditEvent",
    "BreakGlassAccount",
    "BreakGlassEnrollment",
    "BreakGlassSecurityKey",
    "BreakGlassThrottle",
    "FederatedIdentity",
    "IdentityProvider",
    "Role",
    "RoleMapping",
    "UserRole",
]
