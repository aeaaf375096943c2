"""Admin API permissions, by role.

* ``API_ADMIN_ROLES`` (default ``portal_admin``), or a Django superuser's session
  (break-glass): everything.
* ``API_AUDITOR_ROLES`` (default ``auditor``): read the audit log and export it; nothing else.
* Anyone else who is authenticated: 403. Nobody authenticated: 401.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission


def _roles(user) -> frozenset[str]:
    return getattr(user, "roles", frozenset())


def is_admin(user) -> bool:
    if not (user and user.is_authenticated):
        return False
    return bool(getattr(user, "is_superuser", False)) or bool(_roles(user) & set(settings.API_ADMIN_ROLES))


def is_auditor(user) -> bool:
    if not (user and user.is_authenticated):
        return False
    return bool(_roles(user) & set(settings.API_AUDITOR_ROLES))


class IsApiAdmin(BasePermission):
    message = "an admin role is required (API_ADMIN_ROLES)"

    def has_permission(self, request, view) -> bool:
        return is_admin(request.user)


class IsAuditorOrAdmin(BasePermission):
    """Read-only audit access for auditors; admins too."""

    message = "an auditor or admin role is required (API_AUDITOR_ROLES / API_ADMIN_ROLES)"

    def has_permission(self, request, view) -> bool:
        if is_admin(request.user):
            return True
        return request.method in SAFE_METHODS and is_auditor(request.user)
