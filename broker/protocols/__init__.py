"""Protocol adapters. ``broker.protocols.saml`` and ``.oidc`` are the ONLY modules that
import pysaml2 / mozilla-django-oidc. Each exposes::

    begin(request, idp, next_url) -> HttpResponse     # redirect/POST to the IdP
    complete(request, idp) -> tuple[Principal, str]   # verified principal, next URL

and raises ``broker.errors.LoginError`` on any failure.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from broker.errors import LoginError


def adapter_for(protocol: str) -> ModuleType:
    """The adapter module for ``protocol``; ``protocol_unavailable`` if there is none."""
    if protocol not in {"saml", "oidc"}:
        raise LoginError("protocol_unavailable", protocol)
    try:
        module = importlib.import_module(f"{__name__}.{protocol}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{protocol}":
            raise LoginError("protocol_unavailable", protocol) from None
        raise
    if not hasattr(module, "begin") or not hasattr(module, "complete"):
        raise LoginError("protocol_unavailable", protocol)
    return module
