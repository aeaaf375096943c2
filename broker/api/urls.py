"""``/api/``: the Admin API (``v1/``), its OpenAPI 3 schema and the docs (served locally)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.urls import Resolver404, include, path, re_path, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from . import schema, views, views_read  # noqa: F401 (schema registers extensions)
from .exceptions import json_error

router = SimpleRouter()
router.register("idps", views.IdpViewSet, basename="api-idp")
router.register("roles", views.RoleViewSet, basename="api-role")
router.register("mappings", views.MappingViewSet, basename="api-mapping")
router.register("identities", views_read.IdentityViewSet, basename="api-identity")
router.register("breakglass-accounts", views_read.BreakGlassViewSet, basename="api-breakglass")
router.register("audit/events", views_read.AuditEventViewSet, basename="api-audit-event")


@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """JSON 404 for unknown ``/api/`` paths (and APPEND_SLASH's redirect, which this catch-all
    would otherwise pre-empt)."""
    if not request.path_info.endswith("/") and request.method in {"GET", "HEAD"}:
        try:
            match = resolve(request.path_info + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not not_found:
            query = request.META.get("QUERY_STRING", "")
            return HttpResponsePermanentRedirect(request.path + "/" + (f"?{query}" if query else ""))
    return json_error(404, "not_found", "no such API endpoint")


urlpatterns = [
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    re_path(r"^(?P<rest>.*)$", not_found),
]
