"""SAML 2.0 service provider adapter (pysaml2 + an in-process xmlsec backend).

``begin`` sends the browser to the IdP with a signed AuthnRequest; ``complete`` verifies
the POSTed Response and returns a ``Principal``. The rest of the broker never sees SAML.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from broker import loginstate
from broker.errors import LoginError
from broker.models import IdentityProvider

from . import metadata
from .acs import complete
from .client import client_for, idp_entity_id
from .slo import begin_logout, complete_logout, logout_message_kind, logout_reply, receive_logout_request

__all__ = ["begin", "complete", "begin_logout", "complete_logout", "logout_message_kind", "logout_reply",
           "receive_logout_request"]


def begin(request: HttpRequest, idp: IdentityProvider, next_url: str, mode: str = "login") -> HttpResponse:
    """Redirect (or POST) the browser to the IdP with a signed AuthnRequest.

    The request ID is stored, bound to this browser, under an opaque RelayState handle;
    the ACS accepts only a response to it (one-time, LOGIN_STATE_TTL).
    """
    if metadata.is_expired(idp.config.get("metadata_valid_until")):
        raise LoginError("idp_metadata_expired")
    client, _backend = client_for(idp)
    handle = loginstate.new_handle()
    post = idp.config.get("authn_binding") == "post"
    binding = BINDING_HTTP_POST if post else BINDING_HTTP_REDIRECT
    request_id, info = client.prepare_for_authenticate(
        entityid=idp_entity_id(idp), relay_state=handle, binding=binding, sign=True,
        sigalg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256,
    )
    if post:
        response = HttpResponse(info["data"], content_type="text/html; charset=utf-8")
    else:
        location = dict(info["headers"])["Location"]
        response = HttpResponseRedirect(location)
    response["Cache-Control"] = "no-store"
    loginstate.begin(request, response, "saml", handle,
                     {"idp": idp.slug, "request_id": request_id, "next": next_url, "mode": mode})
    return response
