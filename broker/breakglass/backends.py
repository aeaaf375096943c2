"""Keep break-glass accounts off every password-only login (e.g. /admin/login/).

Listed first in AUTHENTICATION_BACKENDS: for a break-glass account name it raises
``PermissionDenied``, which makes ``django.contrib.auth.authenticate()`` stop and fail, so the
second factor at /breakglass/ cannot be bypassed. It authenticates nobody itself (everyone
else falls through to ModelBackend).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.core.exceptions import PermissionDenied

from broker import audit
from broker.models import BreakGlassAccount


class BreakGlassOnlyBackend(BaseBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username and BreakGlassAccount.objects.filter(user__username=username).exists():
            audit.record("breakglass.failed", outcome="failure", actor="", reason="wrong_entry_point",
                         account=str(username)[:150], step="password")
            raise PermissionDenied("break-glass accounts log in at /breakglass/ only")
        return None

    def get_user(self, user_id):
        # Sessions that name this backend (e.g. the test client's force_login, which takes the
        # first listed backend) resolve users exactly as ModelBackend does.
        return ModelBackend().get_user(user_id)
