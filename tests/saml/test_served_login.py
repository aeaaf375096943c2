"""A SAML login through the production server path (gunicorn with deploy/gunicorn.conf.py):
the session works on the next request, and the audit event is sealed into the hash chain by
the background sealer (in a serving worker no request seals)."""

from __future__ import annotations

import base64
import http.client
import time
import urllib.parse

import pytest
from django.conf import settings as django_settings

from broker import keys
from broker.audit.verify import verify_database
from broker.models import AuditEvent
from tests.saml.conftest import make_setup
from tests.servers import BrokerServer, free_port, test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_login_through_gunicorn_is_sealed_by_the_background_sealer(tmp_path, settings):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings.BASE_URL = base  # the SP metadata handed to the IdP names the server's endpoints
    settings.SAML_KEY_DIR = tmp_path / "sp"
    keys.generate(size=2048, actor="test")
    setup = make_setup(tmp_path, slug="corp")
    cache = django_settings.CACHES["default"]
    server = BrokerServer({
        "DATABASE_URL": test_database_url(), "REDIS_URL": cache["LOCATION"],
        "REDIS_KEY_PREFIX": cache.get("KEY_PREFIX", ""), "SECRET_KEY": django_settings.SECRET_KEY,
        "BASE_URL": base, "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "0",
        "SAML_KEY_DIR": str(tmp_path / "sp"), "BROKER_VAR_DIR": str(tmp_path / "var"),
    }, port=port, production_config=True)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.request("GET", "/sso/corp/login/?next=/portal/")
        started = conn.getresponse()
        started.read()
        assert started.status == 302, server.stop()
        binding = started.getheader("Set-Cookie").split(";", 1)[0]
        request, relay_state = setup.idp.read_redirect(started.getheader("Location"))
        xml = setup.idp.response_xml(in_response_to=request.message.id,
                                     destination=f"{base}/sso/corp/saml/acs/",
                                     sp_entity_id=f"{base}/sso/corp/saml/metadata/")
        body = urllib.parse.urlencode({"SAMLResponse": base64.b64encode(xml.encode()).decode(),
                                       "RelayState": relay_state})
        conn.request("POST", "/sso/corp/saml/acs/", body=body, headers={
            "Cookie": binding, "Content-Type": "application/x-www-form-urlencoded"})
        done = conn.getresponse()
        done.read()
        assert (done.status, done.getheader("Location")) == (302, "/portal/"), server.stop()
        session = next(c.split(";", 1)[0] for c in done.headers.get_all("Set-Cookie")
                       if c.startswith("sso_session="))  # plain HTTP: no __Host- prefix
        conn.request("GET", "/sso/me/", headers={"Cookie": session})
        me = conn.getresponse()
        assert me.status == 200 and b'"subject": "alice"' in me.read()
        conn.close()

        event = AuditEvent.objects.get(action="login.succeeded")
        deadline = time.monotonic() + 15
        while event.seq is None and time.monotonic() < deadline:
            time.sleep(0.05)
            event.refresh_from_db()
        assert event.seq is not None, "the server's sealer thread did not seal the login event"
        report = verify_database(seal_first=False)
        assert report.ok, [p.detail for p in report.problems]
    finally:
        server.stop()
