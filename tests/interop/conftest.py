"""Interop fixtures: the broker as a live HTTP server, and independent peers from the npm
registry (tests/interop/package.json, installed by `make test`) as real child processes."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from broker import keys
from broker.protocols.saml.metadata import register
from tests.servers import terminate

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
SAML_IDP_SCRIPT = HERE / "saml_idp.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _require_node_modules(package: str) -> None:
    if not (NODE_MODULES / package / "package.json").exists():
        pytest.fail(f"npm package {package} is missing: run `make test` (npm ci --prefix tests/interop)")


@pytest.fixture
def broker_url(live_server, settings) -> str:
    """The broker served over plain HTTP by pytest-django's live server (transactional DB).

    BASE_URL must be the live server's URL: entity IDs and the ACS URL are built from it at
    call time. Plain http means no Secure cookies and no __Host- prefixes.
    """
    settings.BASE_URL = live_server.url
    settings.SECURE_COOKIES = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.SESSION_COOKIE_NAME = "sso_session"
    settings.CSRF_COOKIE_NAME = "csrftoken"
    settings.LOGIN_BINDING_COOKIE = "sso_login"
    settings.SECURE_SSL_REDIRECT = False
    settings.SECURE_HSTS_SECONDS = 0
    return live_server.url


@pytest.fixture
def sp_keys(settings, tmp_path):
    settings.SAML_KEY_DIR = tmp_path / "sp-keys"
    return keys.generate(size=2048, actor="test")


@dataclass(frozen=True)
class KeyFiles:
    key: Path
    cert: Path


def make_key_files(directory: Path, common_name: str) -> KeyFiles:
    """An RSA-2048 key and a self-signed SHA-256 certificate, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    files = KeyFiles(directory / "idp-key.pem", directory / "idp-cert.pem")
    files.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files.key.chmod(0o600)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


class NodeProcess:
    """A Node peer; its stdout and stderr go to ``log_path``. Ready once it logs a line
    ``READY {"port": N, "url": ...}`` (the npm packages print on stdout too, so no pipe)."""

    def __init__(self, args: list[str], log_path: Path, timeout: float = 30) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not installed (Node 20+ is needed for the interop tests)")
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen([node, *args], cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.info = self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.url: str = self.info["url"]

    def _wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("READY "):
                    return json.loads(line.removeprefix("READY "))
            if self.proc.poll() is not None:
                raise RuntimeError(f"node peer exited ({self.proc.returncode}): {self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"node peer did not start in {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        terminate(self.proc)


@dataclass
class SamlifyServer:
    process: NodeProcess
    sp_dir: Path

    @property
    def url(self) -> str:
        return self.process.url


@pytest.fixture(scope="session")
def samlify_server(live_server, tmp_path_factory) -> Iterator[SamlifyServer]:
    """The samlify IdP, one process per test session (its schema validator takes seconds to
    warm up). SPs it trusts are files in ``sp_dir`` (see saml_idp.js).

    It advertises the live server's host name, so both are the same site: over plain http
    the broker's login-binding cookie is SameSite=Lax (None needs Secure), and a cross-site
    POST from the IdP would not carry it.
    """
    _require_node_modules("samlify")
    _require_node_modules("@authenio/samlify-node-xmllint")
    directory = tmp_path_factory.mktemp("samlify")
    key_files = make_key_files(directory, "samlify interop IdP")
    sp_dir = directory / "sps"
    sp_dir.mkdir()
    host = urlsplit(live_server.url).hostname
    process = NodeProcess(
        [str(SAML_IDP_SCRIPT), "--key", str(key_files.key), "--cert", str(key_files.cert),
         "--sp-dir", str(sp_dir), "--public-host", host],
        directory / "idp.log",
    )
    yield SamlifyServer(process, sp_dir)
    process.stop()


@dataclass
class SamlifyIdP:
    """The samlify IdP and the broker's registration of it for one test."""

    server: SamlifyServer
    slug: str
    broker_url: str
    sign: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def login_url(self) -> str:
        return f"{self.broker_url}/sso/{self.slug}/login/"

    @property
    def acs_url(self) -> str:
        return f"{self.broker_url}/sso/{self.slug}/saml/acs/"

    def log(self) -> str:
        return self.server.process.log()


@pytest.fixture
def samlify_idp(samlify_server, broker_url, sp_keys) -> Iterator[Callable[..., SamlifyIdP]]:
    """Register the samlify IdP as ``slug`` and make it trust our SP metadata, signing its
    responses per ``sign`` (assertion | both | response)."""
    sp_dir = samlify_server.sp_dir
    metadata = requests.get(f"{samlify_server.url}/metadata", timeout=10)
    metadata.raise_for_status()
    written: list[Path] = []

    def start(sign: str = "assertion", slug: str = "samlify") -> SamlifyIdP:
        register(slug, name=f"samlify ({sign})", metadata_xml=metadata.content, actor="test")
        ours = requests.get(f"{broker_url}/sso/{slug}/saml/metadata/", timeout=10)
        assert ours.status_code == 200, ours.text[:500]
        # The signing mode first: the IdP trusts the SP once its metadata file exists.
        for path, content in ((sp_dir / f"{slug}.sign", sign.encode()),
                              (sp_dir / f"{slug}.xml", ours.content)):
            path.write_bytes(content)
            written.append(path)
        return SamlifyIdP(server=samlify_server, slug=slug, broker_url=broker_url, sign=sign)

    yield start
    for path in written:
        path.unlink(missing_ok=True)


class AutoPostForm(HTMLParser):
    """The first <form> of an HTML page: its action and its named inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if self._done:
            return
        if tag == "form" and self.action is None:
            self.action = attributes.get("action")
            self.method = (attributes.get("method") or "get").lower()
            self._in_form = True
        elif tag == "input" and self._in_form and attributes.get("name"):
            self.fields[attributes["name"]] = attributes.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form" and self._in_form:
            self._in_form = False
            self._done = True

    @classmethod
    def parse(cls, html: str) -> AutoPostForm:
        form = cls()
        form.feed(html)
        form.close()
        if form.action is None:
            raise AssertionError(f"no form in page: {html[:500]}")
        return form
