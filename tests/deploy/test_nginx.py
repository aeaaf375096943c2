"""Real nginx (Debian package) in front of the broker (gunicorn) and an upstream, configured
by deploy/nginx/ AS SHIPPED: the test only substitutes the __PLACEHOLDERS__ (ports, paths,
certificate) and wraps the files in a minimal nginx.conf, so what passes here is the example.

Sessions are created in this process (complete_login) in the same Redis, under the same key
prefix, as the server process; the database is the test database, committed
(transaction=True), so the server sees the IdPs, roles and mappings.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings

from broker.login import SESSION_USERNAME, complete_login
from broker.services import roles as role_service
from tests.oidc.conftest import register_fake
from tests.oidc.fake_op import FakeOP, self_signed_cert
from tests.servers import ROOT, BrokerServer, free_port, test_database_url

pytestmark = pytest.mark.slow

DEPLOY = ROOT / "deploy" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PLACEHOLDER = re.compile(r"__[A-Z][A-Z0-9_]+__")
# The server's BASE_URL is https, so its session cookie carries the __Host- prefix.
COOKIE = "__Host-sso_session"
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


# --- the pieces ------------------------------------------------------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    """The protected application: answers with what it received, as JSON."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {"method": self.command, "path": self.path, "body": body.decode(errors="replace"),
                "headers": {k.lower(): self.headers.get_all(k) for k in set(self.headers.keys())}}
        self.server.seen.append(seen)  # type: ignore[attr-defined]
        payload = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _echo  # noqa: N815


class EchoUpstream:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
        self.server.daemon_threads = True
        self.server.seen = []  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> list[dict]:
        return self.server.seen  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def render(text: str, values: dict[str, str]) -> str:
    """The deploy file with its placeholders filled; every placeholder must be known."""
    for name, value in values.items():
        text = text.replace(f"__{name}__", value)
    left = sorted(set(PLACEHOLDER.findall(text)))
    assert not left, f"placeholders the test does not know: {left}"
    return text


class Nginx:
    """nginx in the foreground, everything (config, pid, logs, temp files) under ``directory``."""

    def __init__(self, directory: Path, values: dict[str, str], ports: tuple[int, ...]) -> None:
        self.directory = directory
        for source in [*DEPLOY.glob("*.conf"), *DEPLOY.glob("snippets/*.conf")]:
            target = directory / source.relative_to(DEPLOY)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render(source.read_text(), values))
        (directory / "temp").mkdir()
        self.error_log = directory / "error.log"
        (directory / "nginx.conf").write_text(f"""
worker_processes 1;
error_log {self.error_log} info;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/temp/body;
    proxy_temp_path {directory}/temp/proxy;
    include portal.conf;
    include management.conf;
}}
""")
        command = [NGINX, "-p", str(directory), "-e", str(self.error_log),
                   "-c", str(directory / "nginx.conf"), "-g", f"daemon off; pid {directory}/nginx.pid;"]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=20)
        assert check.returncode == 0, check.stderr + self.log()
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.wait(*ports)
            # The shipped configuration loads without a warning.
            problems = re.compile(r"\[(warn|error|crit|alert|emerg)\]")
            assert not problems.search(check.stderr + self.log()), check.stderr + self.log()
        except BaseException:
            self.stop()
            raise

    def wait(self, *ports: int) -> None:
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                assert self.proc.poll() is None, f"nginx exited: {self.log()}"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"nginx did not listen on {port}: {self.log()}"
                    time.sleep(0.05)

    def log(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of master and workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _certificate(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert, key_file = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(self_signed_cert(key).public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return str(cert), str(key_file)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Stack:
    portal_port: int
    mgmt_port: int
    cafile: str
    upstream: EchoUpstream
    broker: BrokerServer
    nginx: Nginx
    base_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = f"https://127.0.0.1:{self.portal_port}"

    def request(self, path: str, headers: dict[str, str] | None = None, *, method: str = "GET",
                body: bytes | None = None, port: int | None = None) -> Response:
        context = ssl.create_default_context(cafile=self.cafile)
        conn = http.client.HTTPSConnection("127.0.0.1", port or self.portal_port, context=context, timeout=15)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            conn.close()

    def logs(self) -> str:
        return f"--- nginx error.log\n{self.nginx.log()[-3000:]}\n--- broker\n{self.broker.output()[-3000:]}"


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory) -> Stack:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: run `make test-deps` (scripts/install-system-deps.sh nginx)")
    directory = tmp_path_factory.mktemp("nginx")
    cert, key = _certificate(directory)
    portal_port, mgmt_port = free_port(), free_port()
    upstream = EchoUpstream()
    cache = settings.CACHES["default"]
    broker = None
    nginx = None
    try:
        broker = BrokerServer({
            # The test database (committed data only: tests use transaction=True) and the
            # same Redis database and key prefix as this process, where sessions are made.
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": cache["LOCATION"],
            "REDIS_KEY_PREFIX": cache.get("KEY_PREFIX", ""),
            "SECRET_KEY": settings.SECRET_KEY,
            # What deploy/nginx/README.md asks of a broker behind this nginx.
            "BASE_URL": f"https://127.0.0.1:{portal_port}",
            "ALLOWED_HOSTS": "127.0.0.1",
            "TRUST_X_FORWARDED_PROTO": "1",
            "TRUSTED_PROXIES": "127.0.0.1",
            "REDIRECT_ALLOWED_HOSTS": f"127.0.0.1:{mgmt_port}",
            "BROKER_VAR_DIR": str(directory / "var"),
            # Each test makes its own IdPs: no hot-path configuration cached across tests.
            "HOT_PATH_CONFIG_TTL": "0",
        })
        (directory / "conf").mkdir()
        nginx = Nginx(directory / "conf", {
            "SERVER_NAME": "127.0.0.1",
            "LISTEN": f"127.0.0.1:{portal_port}",
            "MGMT_LISTEN": f"127.0.0.1:{mgmt_port}",
            "TLS_CERT": cert,
            "TLS_KEY": key,
            "BROKER": f"127.0.0.1:{broker.port}",
            # BrokerServer has one listener; gunicorn serves the same app on every listener.
            "BROKER_ADMIN": f"127.0.0.1:{broker.port}",
            "UPSTREAM": f"127.0.0.1:{upstream.port}",
            "ADMIN_NETWORK": "127.0.0.1/32",
            "PORTAL_URL": f"https://127.0.0.1:{portal_port}",
        }, ports=(portal_port, mgmt_port))
        yield Stack(portal_port, mgmt_port, cert, upstream, broker, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        if broker is not None:
            broker.stop()
        upstream.stop()


# --- sessions --------------------------------------------------------------------------------


@pytest.fixture
def login(make_idp, make_role, make_principal, session_request):
    """A session in the shared Redis: login(subject, groups) -> (cookie header, username)."""
    make_idp("corp")
    for role, group in (("portal_admin", "api_admins"), ("developer", "devs")):
        make_role(role)
        role_service.set_mapping(claim="groups", value=group, role=role, actor="test")

    def _login(subject: str, groups: list[str]) -> tuple[str, str]:
        request = session_request()
        complete_login(request, make_principal(subject, attributes={
            "mail": f"{subject}@corp.example", "groups": groups}))
        request.session.save()  # as the session middleware does at the end of the response
        return f"{COOKIE}={request.session.session_key}", request.session[SESSION_USERNAME]

    return _login


def _one(seen: dict, header: str) -> str:
    values = seen["headers"].get(header.lower()) or []
    assert len(values) == 1, (header, values)
    return values[0]


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_unauthenticated_browser_is_redirected_to_login_and_api_client_gets_401(stack, make_idp):
    make_idp("corp", name="Corp Directory")
    before = len(stack.upstream.seen)
    login_url = f"{stack.base_url}/sso/?next=/apis/payments%3Fpage%3D2"

    response = stack.request("/apis/payments?page=2", BROWSER)
    assert response.status == 302, stack.logs()
    assert response.headers["Location"] == login_url

    # fetch/XHR and API clients: the 401 itself, with where a browser would have gone.
    for headers in ({"Accept": "application/json"}, {**BROWSER, "X-Requested-With": "XMLHttpRequest"}, {}):
        response = stack.request("/apis/payments?page=2", headers)
        assert response.status == 401, (headers, response.status)
        assert response.headers["X-Auth-Login-URL"] == login_url
        assert response.headers.get_all("WWW-Authenticate") == ['Bearer realm="portal"']
        assert response.json() == {"error": "login_required", "login_url": login_url}
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")

    # A stale or forged cookie is no better than none.
    response = stack.request("/", {**BROWSER, "Cookie": f"{COOKIE}=doesnotexist0000"})
    assert response.status == 302 and response.headers["Location"] == f"{stack.base_url}/sso/?next=/"
    assert len(stack.upstream.seen) == before, "the upstream must not see unauthenticated requests"

    # The login URL is served by the broker through the same nginx (no HTTPS redirect loop:
    # X-Forwarded-Proto reaches Django).
    picker = stack.request(urlsplit(login_url).path + "?" + urlsplit(login_url).query, BROWSER)
    assert picker.status == 200, (picker.status, picker.headers, stack.logs())
    assert "Corp Directory" in picker.body.decode()  # the test database, through nginx


@pytest.mark.django_db(transaction=True)
def test_authenticated_request_reaches_upstream_with_identity_headers(stack, login):
    cookie, username = login("alice", ["api_admins"])
    spoofed = {"X-Auth-User": "root", "X-Auth-Roles": "portal_admin,auditor", "X-Auth-Email": "x@evil",
               "X-Auth-IdP": "evil", "X-Auth_User": "root", "X-Forwarded-Proto": "http"}

    response = stack.request("/apis/payments?page=2", {**BROWSER, "Cookie": cookie, **spoofed})
    assert response.status == 200, (response.status, stack.logs())
    seen = response.json()
    assert seen["path"] == "/apis/payments?page=2"
    assert _one(seen, "X-Auth-User") == username and username.startswith("corp.")
    assert _one(seen, "X-Auth-Email") == "alice@corp.example"
    assert _one(seen, "X-Auth-Roles") == "portal_admin"
    assert _one(seen, "X-Auth-IdP") == "corp"
    assert "x-auth_user" not in seen["headers"]  # underscores: dropped by nginx
    assert _one(seen, "X-Forwarded-Proto") == "https"
    assert re.fullmatch(r"[0-9a-f]{32}", _one(seen, "X-Request-ID"))

    # Somebody without roles: an empty X-Auth-Roles never becomes the client's value.
    cookie, username = login("bob", [])
    seen = stack.request("/", {"Cookie": cookie, **spoofed}).json()
    assert _one(seen, "X-Auth-User") == username
    assert "x-auth-roles" not in seen["headers"], seen["headers"]

    # A request body goes to the upstream intact (the auth subrequest sends none).
    body = json.dumps({"name": "new api"}).encode()
    response = stack.request("/apis", {"Cookie": cookie, "Content-Type": "application/json"},
                             method="POST", body=body)
    assert response.status == 200 and response.json()["body"] == body.decode()


@pytest.mark.django_db(transaction=True)
def test_role_restricted_location(stack, login):
    admin_cookie, _ = login("alice", ["api_admins"])
    dev_cookie, _ = login("bob", ["devs"])
    before = len(stack.upstream.seen)

    response = stack.request("/admin-portal/keys", {"Cookie": admin_cookie})
    assert response.status == 200, stack.logs()
    assert response.json()["path"] == "/admin-portal/keys"
    assert _one(response.json(), "X-Auth-Roles") == "portal_admin"

    assert stack.request("/admin-portal/keys", {"Cookie": dev_cookie}).status == 403
    # The client cannot pick the role to check (X-Auth-Require-Role: one it holds) ...
    assert stack.request("/admin-portal/keys", {"Cookie": dev_cookie,
                                                "X-Auth-Require-Role": "developer"}).status == 403
    # ... nor smuggle ?role= through the original URI.
    assert stack.request("/admin-portal/keys?role=developer", {"Cookie": dev_cookie}).status == 403
    assert len(stack.upstream.seen) == before + 1
    # Not logged in at all: the login page, not a 403.
    response = stack.request("/admin-portal/", BROWSER)
    assert response.status == 302
    assert response.headers["Location"] == f"{stack.base_url}/sso/?next=/admin-portal/"
    # The developer is welcome elsewhere.
    assert stack.request("/apis", {"Cookie": dev_cookie}).status == 200


@pytest.mark.django_db(transaction=True)
def test_bearer_token(stack, login, monkeypatch):
    login("nobody", [])  # the roles and mappings
    monkeypatch.setenv("TEST_OIDC_SECRET_PRIMARY", "op-secret-1-0123456789abcdefghijklmnopqrstuv")
    fake = FakeOP()
    try:
        register_fake(fake, slug="op")
        now = int(time.time())
        claims = {"iss": fake.issuer, "sub": "carol", "aud": f"{stack.base_url}/api", "iat": now,
                  "exp": now + 300, "groups": ["api_admins"], "email": "carol@op.example"}
        token = fake.sign(claims, headers={"typ": "at+jwt"})
        bearer = {"Authorization": f"Bearer {token}", "X-Auth-User": "root"}

        response = stack.request("/admin-portal/apis", bearer)
        assert response.status == 200, (response.status, stack.logs())
        seen = response.json()
        assert _one(seen, "X-Auth-User") == "op:carol"
        assert _one(seen, "X-Auth-Roles") == "portal_admin" and _one(seen, "X-Auth-IdP") == "op"
        assert _one(seen, "Authorization") == f"Bearer {token}"  # for the upstream's own use

        # A token the broker refuses: 401 even for a browser (an API client, not a login).
        other = fake.sign({**claims, "aud": "https://elsewhere.example/api"}, headers={"typ": "at+jwt"})
        response = stack.request("/apis", {**BROWSER, "Authorization": f"Bearer {other}"})
        assert response.status == 401
        assert response.headers.get_all("WWW-Authenticate") == ['Bearer error="invalid_token"']
    finally:
        fake.close()


@pytest.mark.django_db(transaction=True)
def test_management_server(stack, login):
    mgmt = stack.mgmt_port
    response = stack.request("/admin/", BROWSER, port=mgmt)
    assert response.status == 302, (response.status, stack.logs())
    assert response.headers["Location"].startswith("/admin/login/")
    response = stack.request(response.headers["Location"], BROWSER, port=mgmt)
    assert response.status == 302 and response.headers["Location"] == "/sso/?next=%2Fadmin%2F"
    # The picker lives on the portal; the admin comes back to this port afterwards.
    response = stack.request(response.headers["Location"], BROWSER, port=mgmt)
    assert response.status == 302
    assert response.headers["Location"] == (
        f"{stack.base_url}/sso/?next=https://127.0.0.1:{mgmt}%2Fadmin%2F")
    assert stack.request("/static/admin/css/base.css", port=mgmt).status == 200
    # Only the admin surfaces: no login flow or forward-auth on this port.
    for path in ("/auth/verify", "/sso/me/", "/sso/corp/login/", "/healthz"):
        assert stack.request(path, port=mgmt).status == 404, path


@pytest.mark.django_db(transaction=True)
def test_broker_down_fails_closed(stack, login):
    """Last: stops the broker. Not a 200, not the upstream: a 503."""
    cookie, _ = login("alice", ["api_admins"])
    assert stack.request("/", {"Cookie": cookie}).status == 200
    before = len(stack.upstream.seen)
    stack.broker.stop()
    response = stack.request("/", {**BROWSER, "Cookie": cookie})
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert len(stack.upstream.seen) == before
