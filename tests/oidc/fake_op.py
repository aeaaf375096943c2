"""A small misbehaving OpenID Provider of our own, for faults a certified OP will not produce.

A real HTTP server (``http.server`` in a thread on 127.0.0.1, free port, optionally TLS with
a self-signed certificate) implementing discovery, the JWKS, the authorization endpoint
(immediately redirects back with code + state), the token endpoint (client authentication
and PKCE S256 are checked for real) and userinfo. Keys come from ``cryptography``
(RSA-2048 and EC P-256), tokens are signed with PyJWT.

Every fault is a knob on the ``FakeOP`` object: set it before the step that uses it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

DROP = object()  # a claim or header override that removes the entry
DEFAULT_SECRET = "op-secret-1-0123456789abcdefghijklmnopqrstuv"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


# --- keys ------------------------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    private: Any  # a cryptography private key
    kty: str  # "RSA" or "EC"

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def public_jwk(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.public) if self.kty == "RSA"
                         else jwt.algorithms.ECAlgorithm.to_jwk(self.public))
        return {**jwk, "kid": self.kid, "use": "sig"}

    def private_jwk(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private) if self.kty == "RSA"
                         else jwt.algorithms.ECAlgorithm.to_jwk(self.private))
        return {**jwk, "kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)


def new_rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA")


def new_ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, ec.generate_private_key(ec.SECP256R1()), "EC")


@cache
def _shared_key(kind: str, kid: str) -> SigningKey:
    """Default keys are generated once per test process (RSA generation is the slow part)."""
    return new_rsa_key(kid) if kind == "RSA" else new_ec_key(kid)


def self_signed_cert(key: Any, common_name: str = "127.0.0.1") -> x509.Certificate:
    import ipaddress

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def hmac_jws(header: dict, payload: dict, secret: bytes) -> str:
    """HS* by hand: PyJWT (rightly) refuses a PEM public key as an HMAC secret, an attacker
    does not."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[header["alg"]]
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(payload, separators=(",", ":")).encode()))
    return signing_input + "." + b64url(hmac.new(secret, signing_input.encode(), digest).digest())


@dataclass
class RawBody:
    """A response body sent as is (e.g. a userinfo JWT, or junk)."""

    content_type: str
    text: str


def _without_drops(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not DROP}


# --- the HTTP servers ----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after a test

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def send_json(self, status: int, body: Any, headers: dict | None = None) -> None:
        raw = isinstance(body, RawBody)
        data = body.text.encode() if raw else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", body.content_type if raw else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _ServerThread:
    """Run ``_Server`` in a daemon thread; ``stop()`` is idempotent (connection refused after)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.owner = owner  # type: ignore[attr-defined]
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)


class CountingServer:
    """An attacker's server (for ``jku`` / ``x5u``): serves ``body`` on every path and counts hits."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.hits = 0
        self.paths: list[str] = []
        self._thread = _ServerThread(_CountingHandler, self)
        self.url = f"http://127.0.0.1:{self._thread.port}"

    def stop(self) -> None:
        self._thread.stop()


class _CountingHandler(_BaseHandler):
    def do_GET(self) -> None:  # noqa: N802
        owner: CountingServer = self.server.owner  # type: ignore[attr-defined]
        owner.hits += 1
        owner.paths.append(self.path)
        self.send_json(200, owner.body)


@dataclass
class TokenRequest:
    """What the token endpoint saw (for assertions at the provider)."""

    form: dict[str, str]
    auth_method: str  # "client_secret_basic", "client_secret_post" or "none"
    client_id: str
    secret: str
    outcome: str = ""
    pkce_verified: bool = False
    code_challenge: str = ""


@dataclass
class FakeOP:
    """The provider. Knobs (all plain attributes; defaults give a well-behaved provider):

    * ``accepted_secrets``: client secrets the token endpoint accepts (others: invalid_client)
    * ``subject``, ``groups``, ``sid``, ``email``: what the ID token says about the person
    * ``id_token_overrides``: claim -> value (``DROP`` removes the claim)
    * ``header_overrides``: JOSE header -> value (``DROP`` removes, e.g. ``kid``)
    * ``alg`` (``RS256``; ``ES*`` signs with the EC key), ``sign_with``: another key (a
      ``SigningKey``, a cryptography key, or ``bytes`` for HS*), ``tamper_signature``
    * ``userinfo_sub`` / ``userinfo_claims``: what userinfo answers; ``userinfo_jwt`` (+
      ``userinfo_jwt_alg``) answers with a signed JWT, ``userinfo_raw`` with any ``RawBody``
    * ``discovery_issuer`` / ``discovery_overrides``: lie in the discovery document
    * ``token_error``: an OAuth error code the token endpoint returns instead of tokens
    * ``status``: endpoint name -> HTTP status (``discovery``, ``jwks``, ``token``, ``userinfo``)
    * ``send_iss`` / ``callback_iss``: RFC 9207 ``iss`` in the authorization response
    * ``authorize_error``: return ``error=...`` to the redirect URI instead of a code
    * ``jwks_extra`` (raw JWK dicts appended), ``publish_private`` (publish private JWKs)
    Counters: ``jwks_requests``, ``discovery_requests``, ``token_requests`` (list),
    ``authorization_requests`` (list of query dicts), ``userinfo_requests``.
    """

    client_id: str = "broker-client"
    accepted_secrets: set[str] = field(default_factory=lambda: {DEFAULT_SECRET})
    tls: bool = False

    def __post_init__(self) -> None:
        self.keys: list[SigningKey] = [_shared_key("RSA", "rsa-1"), _shared_key("EC", "ec-1")]
        self.signing_rsa = self.keys[0]
        self.signing_ec = self.keys[1]
        self.subject = "alice"
        self.groups: list[str] | None = ["api_admins", "staff"]
        self.email = "alice@op.example"
        self.sid: str | None = "sid-" + secrets.token_hex(4)
        self.id_token_overrides: dict[str, Any] = {}
        self.header_overrides: dict[str, Any] = {}
        self.alg = "RS256"
        self.sign_with: Any = None
        self.tamper_signature = False
        self.userinfo_sub: Any = None
        self.userinfo_claims: dict[str, Any] = {"name": "Alice Example"}
        self.userinfo_jwt = False  # answer userinfo as a signed JWT (application/jwt)
        self.userinfo_jwt_alg = "RS256"
        self.userinfo_raw: RawBody | None = None
        self.discovery_issuer: str | None = None
        self.discovery_overrides: dict[str, Any] = {}
        self.token_error: str | None = None
        self.token_omit_id_token = False
        self.status: dict[str, int] = {}
        self.send_iss = False
        self.callback_iss: str | None = None
        self.authorize_error: str | None = None
        self.jwks_extra: list[dict] = []
        self.publish_private = False
        # counters / records
        self.errors: list[str] = []  # exceptions inside the fake itself (a test bug, not a fault)
        self.jwks_requests = 0
        self.discovery_requests = 0
        self.userinfo_requests = 0
        self.authorization_requests: list[dict[str, str]] = []
        self.token_requests: list[TokenRequest] = []
        self.codes: dict[str, dict[str, str]] = {}
        self.access_tokens: set[str] = set()
        self._lock = threading.Lock()
        context = None
        self.ca_file = ""
        if self.tls:
            context = self._tls_context()
        self._thread = _ServerThread(_OPHandler, self, context)
        self.port = self._thread.port
        self.issuer = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # --- lifecycle -----------------------------------------------------------------------------
    def _tls_context(self) -> ssl.SSLContext:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = self_signed_cert(key)
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-op-tls-")
        directory = Path(self._tmp.name)
        (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.ca_file = str(directory / "cert.pem")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        return context

    def stop(self) -> None:
        """Shut the server down: from now on every endpoint is connection refused."""
        self._thread.stop()

    def close(self) -> None:
        self.stop()
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()

    # --- documents -----------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.issuer}{path}"

    def discovery(self) -> dict:
        document = {
            "issuer": self.discovery_issuer or self.issuer,
            "authorization_endpoint": self.url("/authorize"),
            "token_endpoint": self.url("/token"),
            "userinfo_endpoint": self.url("/userinfo"),
            "jwks_uri": self.url("/jwks"),
            "end_session_endpoint": self.url("/logout"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "PS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
        }
        document.update(self.discovery_overrides)
        return _without_drops(document)

    def jwks(self) -> dict:
        keys = [k.private_jwk() if self.publish_private else k.public_jwk() for k in self.keys]
        return {"keys": keys + list(self.jwks_extra)}

    def rotate_key(self, *, keep_old: bool = False) -> SigningKey:
        """Key rotation at the provider: a new RSA key (new kid) signs from now on."""
        new = new_rsa_key(f"rsa-{secrets.token_hex(3)}")
        if keep_old:
            self.keys.insert(0, new)
        else:
            self.keys = [new if k is self.signing_rsa else k for k in self.keys]
        self.signing_rsa = new
        return new

    # --- tokens --------------------------------------------------------------------------------
    def id_token_claims(self, nonce: str | None) -> dict:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": self.subject, "aud": self.client_id, "iat": now,
            "exp": now + 300, "auth_time": now, "email": self.email, "name": "Alice Example",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if self.groups is not None:
            claims["groups"] = list(self.groups)
        if self.sid:
            claims["sid"] = self.sid
        claims.update(self.id_token_overrides)
        return _without_drops(claims)

    def sign(self, claims: dict, *, alg: str | None = None, key: Any = None,
             headers: dict | None = None) -> str:
        """Sign ``claims`` as the provider would (or as told by the knobs / arguments)."""
        alg = alg or self.alg
        key = key if key is not None else self.sign_with
        if key is None:
            key = self.signing_ec if alg.startswith("ES") else self.signing_rsa
        header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        if isinstance(key, SigningKey):
            header["kid"] = key.kid
            key = key.private
        header.update(headers if headers is not None else self.header_overrides)
        header = _without_drops(header)
        claims = _without_drops(claims)
        if alg.startswith("HS"):
            token = hmac_jws(header, claims, key if isinstance(key, bytes) else str(key).encode())
        elif alg == "none":
            token = jwt.encode(claims, None, algorithm="none", headers=header)
        elif alg.lower() == "none":  # "None", "NONE": PyJWT would write "none"
            token = (b64url(json.dumps(header).encode()) + "."
                     + b64url(json.dumps(claims).encode()) + ".")
        else:
            extra = {k: v for k, v in header.items() if k != "alg"}
            try:
                token = jwt.encode(claims, key, algorithm=alg, headers=extra)
            except (TypeError, jwt.PyJWTError):
                # PyJWT refuses to *encode* some malformed claims (iss list, ...): sign the
                # JSON bytes with PyJWT's JWS layer instead, as a broken provider would.
                token = jwt.api_jws.encode(json.dumps(claims).encode(), key, algorithm=alg, headers=extra)
        if self.tamper_signature:
            head, body, signature = token.split(".")
            flipped = "A" if signature[5] != "A" else "B"
            token = f"{head}.{body}.{signature[:5]}{flipped}{signature[6:]}"
        return token

    def id_token(self, nonce: str | None) -> str:
        return self.sign(self.id_token_claims(nonce))

    def logout_token(self, *, sid: str | None = None, sub: str | None = None, **overrides: Any) -> str:
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.client_id, "iat": int(time.time()),
            "exp": int(time.time()) + 120, "jti": secrets.token_urlsafe(12),
            "events": {BACKCHANNEL_EVENT: {}},
        }
        if sid is not None:
            claims["sid"] = sid
        if sub is not None:
            claims["sub"] = sub
        claims.update(overrides)
        return self.sign(claims, alg="RS256", key=self.signing_rsa, headers={"typ": "logout+jwt"})

    # --- the browser's visit to the authorization endpoint -----------------------------------------
    def authorize(self, authorization_url: str) -> str:
        """GET the authorization URL over HTTP (as the browser would); return the redirect
        back to the relying party (absolute URL with code, state and maybe iss)."""
        response = requests.get(authorization_url, allow_redirects=False, timeout=5,
                                verify=self.ca_file or True)
        assert response.status_code == 302, (response.status_code, response.text[:300])
        return response.headers["Location"]

    # --- endpoint logic (called by the handler) -----------------------------------------------------
    def handle_authorize(self, query: dict[str, str]) -> tuple[int, dict, Any]:
        self.authorization_requests.append(query)
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or not redirect_uri:
            return 400, {}, {"error": "invalid_request"}
        params: dict[str, str] = {"state": query.get("state", "")}
        if self.authorize_error:
            params["error"] = self.authorize_error
        else:
            code = secrets.token_urlsafe(24)
            with self._lock:
                self.codes[code] = dict(query)
            params["code"] = code
        if self.callback_iss is not None:
            params["iss"] = self.callback_iss
        elif self.send_iss:
            params["iss"] = self.issuer
        sep = "&" if "?" in redirect_uri else "?"
        return 302, {"Location": f"{redirect_uri}{sep}{urlencode(params)}"}, None

    def _client_auth(self, authorization: str, form: dict[str, str]) -> tuple[str, str, str]:
        if authorization.lower().startswith("basic "):
            raw = base64.b64decode(authorization[6:]).decode()
            user, _, password = raw.partition(":")
            return "client_secret_basic", unquote_plus(user), unquote_plus(password)
        if "client_secret" in form:
            return "client_secret_post", form.get("client_id", ""), form["client_secret"]
        return "none", form.get("client_id", ""), ""

    def handle_token(self, authorization: str, form: dict[str, str]) -> tuple[int, dict, Any]:
        method, client_id, secret = self._client_auth(authorization, form)
        record = TokenRequest(form=dict(form), auth_method=method, client_id=client_id, secret=secret)
        self.token_requests.append(record)
        if "token" in self.status:
            record.outcome = f"status {self.status['token']}"
            return self.status["token"], {}, {"error": "server_error"}
        if client_id != self.client_id or secret not in self.accepted_secrets:
            record.outcome = "invalid_client"
            return 401, {"WWW-Authenticate": 'Basic realm="fake-op"'}, {"error": "invalid_client"}
        if self.token_error:
            record.outcome = self.token_error
            return 400, {}, {"error": self.token_error, "error_description": "told to fail"}
        if form.get("grant_type") != "authorization_code":
            record.outcome = "unsupported_grant_type"
            return 400, {}, {"error": "unsupported_grant_type"}
        with self._lock:
            pending = self.codes.pop(form.get("code", ""), None)  # codes are one-time
        if pending is None:
            record.outcome = "invalid_grant"
            return 400, {}, {"error": "invalid_grant", "error_description": "unknown or used code"}
        if form.get("redirect_uri") != pending.get("redirect_uri"):
            record.outcome = "invalid_grant"
            return 400, {}, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
        record.code_challenge = pending.get("code_challenge", "")
        verifier = form.get("code_verifier", "")
        if (pending.get("code_challenge_method") != "S256" or not verifier
                or not hmac.compare_digest(s256(verifier), record.code_challenge)):
            record.outcome = "invalid_grant"
            return 400, {}, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        record.pkce_verified = True
        record.outcome = "ok"
        access_token = secrets.token_urlsafe(24)
        self.access_tokens.add(access_token)
        body: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer", "expires_in": 300}
        if not self.token_omit_id_token:
            body["id_token"] = self.id_token(pending.get("nonce"))
        return 200, {}, body

    def handle_userinfo(self, authorization: str) -> tuple[int, dict, Any]:
        self.userinfo_requests += 1
        if "userinfo" in self.status:
            return self.status["userinfo"], {}, {"error": "server_error"}
        token = authorization[7:] if authorization.startswith("Bearer ") else ""
        if token not in self.access_tokens:
            return 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, {"error": "invalid_token"}
        if self.userinfo_raw is not None:
            return 200, {}, self.userinfo_raw
        info = _without_drops({"sub": self.subject if self.userinfo_sub is None else self.userinfo_sub,
                               "email": self.email, **self.userinfo_claims})
        if self.userinfo_jwt:
            alg = self.userinfo_jwt_alg
            token = self.sign(info, alg=alg, headers={})
            return 200, {}, RawBody("application/jwt", token)
        return 200, {}, info


class _OPHandler(_BaseHandler):
    @property
    def op(self) -> FakeOP:
        return self.server.owner  # type: ignore[attr-defined]

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except Exception as exc:  # noqa: BLE001 - surfaced to the test through op.errors
            self.op.errors.append(f"{type(exc).__name__}: {exc}")
            try:
                self.send_json(500, {"error": "fake_op_crashed"})
            except OSError:
                pass

    def _reply(self, status: int, headers: dict, body: Any) -> None:
        if status == 302:
            self.send_response(302)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_json(status, body, headers)

    def do_GET(self) -> None:  # noqa: N802
        op = self.op
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/.well-known/openid-configuration":
            op.discovery_requests += 1
            status = op.status.get("discovery", 200)
            self._reply(status, {}, op.discovery() if status == 200 else {"error": "down"})
        elif parts.path == "/jwks":
            op.jwks_requests += 1
            status = op.status.get("jwks", 200)
            self._reply(status, {}, op.jwks() if status == 200 else {"error": "down"})
        elif parts.path == "/authorize":
            self._reply(*op.handle_authorize(query))
        elif parts.path == "/userinfo":
            self._reply(*op.handle_userinfo(self.headers.get("Authorization", "")))
        else:
            self._reply(404, {}, {"error": "not_found"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        if urlsplit(self.path).path == "/token":
            self._reply(*self.op.handle_token(self.headers.get("Authorization", ""), form))
        else:
            self._reply(404, {}, {"error": "not_found"})
