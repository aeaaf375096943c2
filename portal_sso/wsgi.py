"""WSGI entry point (gunicorn ``portal_sso.wsgi``): the production server path.

``/auth/verify`` (forward-auth) is answered before Django's middleware and URL resolver:
it is called once per proxied request, so it must cost as little as possible.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal_sso.settings")
django_application = get_wsgi_application()

from broker import forward_auth  # noqa: E402  (needs the app registry loaded above)


def application(environ, start_response):
    if environ.get("PATH_INFO") == forward_auth.PATH:
        return forward_auth.wsgi_app(environ, start_response)
    return django_application(environ, start_response)
