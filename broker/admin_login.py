"""The Django admin's login page is the SSO picker: admins come in through their IdP and
their mapped roles decide what they may do. Break-glass accounts have their own page."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.cache import never_cache

from broker.errors import LoginError
from broker.login import render_error
from broker.redirects import safe_next


@never_cache
def admin_login(request: HttpRequest) -> HttpResponse:
    next_url = safe_next(request.GET.get("next"), default="/admin/")
    if request.user.is_authenticated:
        # Logged in, but the roles from the IdP grant no admin access: say so instead of
        # sending the browser round the IdP again.
        return render_error(request, LoginError("admin_forbidden"))
    return HttpResponseRedirect(f"/sso/?{urlencode({'next': next_url})}")
