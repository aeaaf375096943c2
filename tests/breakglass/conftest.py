"""Break-glass fixtures: accounts made through the real service/CLI, TOTP codes, a login
driver for the test client, and a local webhook receiver."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django_otp.oath import TOTP

from broker.breakglass import accounts
from tests.breakglass.authenticator import SoftAuthenticator

LOGIN = "/breakglass/"
VERIFY = "/breakglass/verify/"


def totp_code(account, offset: int = 0) -> str:
    """The TOTP code of ``account``'s device ``offset`` steps from now."""
    device = accounts.totp_device(account.user)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + offset * device.step
    return f"{totp.token():0{device.digits}d}"


class Created:
    def __init__(self, account, password: str, totp_secret: str, enroll_url: str, stdout: str):
        self.account = account
        self.name = account.name
        self.password = password
        self.totp_secret = totp_secret
        self.enroll_url = enroll_url
        self.stdout = stdout
        self._step = 0

    def code(self) -> str:
        """A fresh TOTP code each call (the device refuses a code twice: step forward)."""
        code = totp_code(self.account, self._step)
        self._step += 1
        return code


def parse_secrets(stdout: str) -> dict[str, str]:
    found = {}
    for key, pattern in {
        "password": r"password:\s+(\S+)",
        "totp_secret": r"TOTP secret:\s+(\S+)",
        "totp_uri": r"TOTP URI:\s+(\S+)",
        "enroll_url": r"open (\S+/breakglass/enroll/\S+/) in a browser",
    }.items():
        match = re.search(pattern, stdout)
        if match:
            found[key] = match.group(1)
    return found


@pytest.fixture
def make_account(db):
    def _make(name: str = "bg-one", *args: str) -> Created:
        out = io.StringIO()
        call_command("breakglass", "create", name, *args, stdout=out)
        text = out.getvalue()
        found = parse_secrets(text)
        account = accounts.get_account(name)
        return Created(account, found["password"], found["totp_secret"], found.get("enroll_url", ""), text)

    return _make


@pytest.fixture
def client():
    return Client()


def login(client: Client, created: Created, *, password: str | None = None, otp: str | None = None,
          authenticator: SoftAuthenticator | None = None, drill: bool = False, next_url: str = "",
          **extra):
    """Drive both steps; returns the last response."""
    data = {"username": created.name, "password": created.password if password is None else password}
    if drill:
        data["drill"] = "1"
    if next_url:
        data["next"] = next_url
    response = client.post(LOGIN, data, **extra)
    if response.status_code != 302:
        return response
    if authenticator is not None:
        page = client.get(VERIFY, **extra)
        options = page.context["webauthn_options"]
        assertion = authenticator.get(options, settings.BREAKGLASS_WEBAUTHN_ORIGIN)
        return client.post(VERIFY, {"assertion": json.dumps(assertion)}, **extra)
    return client.post(VERIFY, {"otp": created.code() if otp is None else otp}, **extra)


class WebhookReceiver:
    """A real local HTTP server recording JSON POSTs."""

    def __init__(self, status: int = 204) -> None:
        received = self.received = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/breakglass"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
