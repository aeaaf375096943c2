"""Admin surfaces only on the management listener.

With ``ADMIN_SURFACES_PORTS`` set (e.g. ``8443``), ``/admin/``, ``/api/`` and ``/breakglass/``
answer 404 on any request that did not arrive on one of those ports. The port is the local port of the socket
the request came in on (gunicorn: ``GUNICORN_ADMIN_BIND``), never a client-supplied header
such as ``Host`` or ``X-Forwarded-Port``. Gunicorn derives ``SERVER_PORT`` from the Host
header on a unix socket, so there the port is unknown and the surfaces stay closed: the
management listener must be TCP. A 404 (not a 403) so the public listener does not even
reveal that the surfaces exist.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound

from .exceptions import json_error

# Break-glass logins are an admin surface too (deploy/nginx/management.conf routes them there).
PREFIXES = ("/admin", "/api", "/breakglass")


def is_admin_surface(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PREFIXES)


def arrival_port(request: HttpRequest) -> str | None:
    """The local TCP port the request arrived on, or None when it cannot be known."""
    sock = request.META.get("gunicorn.socket")
    if sock is not None:
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return None
            return str(sock.getsockname()[1])
        except OSError:
            return None
    return str(request.META.get("SERVER_PORT", "")) or None


class AdminSurfacesPortMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        ports = settings.ADMIN_SURFACES_PORTS
        if ports and is_admin_surface(request.path_info) and arrival_port(request) not in ports:
            if request.path_info.startswith("/api"):
                return json_error(404, "not_found", "no such API endpoint")
            return HttpResponseNotFound(b"Not Found", content_type="text/plain")
        return self.get_response(request)
