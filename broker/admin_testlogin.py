"""The admin's "test login" for an IdP: run a real login there and show the normalized
principal and the roles it would get, without creating, changing or logging in any user.

The login is started by a staff user from the IdP's change page; the pending-login record
carries ``mode: test`` (bound to that browser like any other). When the response comes back
the ACS/callback hands the verified principal here instead of to ``complete_login``.
"""

from __future__ import annotations

import secrets

from django.contrib import admin
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from broker import audit, rbac
from broker.errors import LoginError
from broker.login import login_failed
from broker.models import IdentityProvider
from broker.principal import Principal
from broker.protocols import adapter_for

RESULT_TTL = 600


def start_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    idp = IdentityProvider.objects.filter(pk=object_id).first()
    if idp is None or not model_admin.has_change_permission(request, idp):
        return HttpResponse(status=404)
    try:
        return adapter_for(idp.protocol).begin(request, idp, "/admin/", mode="test")
    except LoginError as exc:
        return login_failed(request, exc, idp=idp.slug)


def show_result(request: HttpRequest, idp: IdentityProvider, principal: Principal) -> HttpResponse:
    """Called by the ACS/callback for a test login: park the result, send the admin to it."""
    grants = rbac.roles_for(idp.slug, principal.attributes, rbac.current_rules(idp))
    key = secrets.token_urlsafe(24)
    cache.set(f"testlogin:{key}", {
        "idp": idp.pk, "principal": principal.as_dict(),
        "roles": [(role, [r.describe() for r in rules]) for role, rules in grants.items()],
    }, timeout=RESULT_TTL)
    audit.record("idp.test_login", idp=idp.slug, subject=principal.subject,
                 roles=sorted(grants))
    return HttpResponseRedirect(reverse("admin:broker_identityprovider_test_login_result", args=[key]))


def result_view(model_admin: admin.ModelAdmin, request: HttpRequest, key: str) -> HttpResponse:
    result = cache.get(f"testlogin:{key}")
    if result is None or not model_admin.has_view_permission(request):
        return HttpResponse("This test login result has expired.", status=404)
    idp = IdentityProvider.objects.filter(pk=result["idp"]).first()
    context = {**model_admin.admin_site.each_context(request), "result": result, "idp": idp,
               "title": f"Test login through {idp.name if idp else '?'}", "opts": model_admin.model._meta}
    return TemplateResponse(request, "admin/broker/test_login_result.html", context)
