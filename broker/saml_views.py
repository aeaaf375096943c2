"""SAML endpoints: SP metadata, assertion consumer, single logout. Thin: the work is in
``broker.protocols.saml``; failures become audited, named error pages."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from broker.errors import LoginError
from broker.keys import KeysMissing
from broker.login import BACKEND_ERRORS, complete_login, login_failed, render_error
from broker.models import IdentityProvider


def _saml_idp(slug: str, *, must_be_enabled: bool = True) -> IdentityProvider:
    idp = IdentityProvider.objects.filter(slug=slug, protocol=IdentityProvider.Protocol.SAML).first()
    if idp is None:
        raise LoginError("idp_unknown", slug)
    if must_be_enabled and not idp.enabled:
        raise LoginError("idp_disabled", slug)
    if not idp.config.get("metadata_xml"):
        raise LoginError("idp_unavailable", "no metadata registered")
    return idp


def _too_large(request: HttpRequest) -> bool:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return True
    return length > settings.SAML_MAX_POST_BYTES


@never_cache
@require_GET
def metadata(request: HttpRequest, slug: str) -> HttpResponse:
    from broker.protocols.saml.spmetadata import sp_metadata

    try:
        idp = _saml_idp(slug, must_be_enabled=False)
        xml = sp_metadata(idp)
    except LoginError as exc:
        return render_error(request, exc)
    except KeysMissing:
        return render_error(request, LoginError("idp_unavailable", "SP keys missing"))
    response = HttpResponse(xml, content_type="application/samlmetadata+xml")
    response["Content-Disposition"] = f'inline; filename="sp-metadata-{slug}.xml"'
    return response


@csrf_exempt  # a cross-site POST from the IdP: the signed Response and the pending-login binding protect it
@never_cache
@require_POST
def acs(request: HttpRequest, slug: str) -> HttpResponse:
    from broker.protocols import saml

    if _too_large(request):
        # Refused before the body is read or parsed.
        response = login_failed(request, LoginError("saml_too_large"), idp=slug)
        response["Connection"] = "close"
        return response
    try:
        idp = _saml_idp(slug)
        principal, next_url, session_data = saml.complete(request, idp)
        return complete_login(request, principal, next_url, session_data=session_data)
    except LoginError as exc:
        return login_failed(request, exc, idp=slug)
    except BACKEND_ERRORS as exc:
        return login_failed(request, LoginError("backend_unavailable", type(exc).__name__), idp=slug)
