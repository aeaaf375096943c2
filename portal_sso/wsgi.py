"""WSGI entry point (gunicorn ``portal_sso.wsgi``): the production server path."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal_sso.settings")
application = get_wsgi_application()
