"""Benchmark: forward-auth (/auth/verify) with a Bearer JWT and with a session cookie,
against a plain view (/healthz) served by the same gunicorn in the same run, loaded by wrk
on loopback. Bounded in time (3 x --seconds).

Targets (issue #7, 2 cores, load generator on the same machine): Bearer >= 5,000 req/s,
cookie >= 4,000 req/s, p99 < 10 ms.
Run: `make bench` or `.venv/bin/python bench/forward_auth.py [--seconds 8] [--connections 16]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import free_port, fresh_django, stop_and_drop  # noqa: E402

DB = "bench_forward_auth"


class _Provider:
    """A minimal OpenID Provider on loopback: discovery and JWKS only."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa
        from jwt.algorithms import RSAAlgorithm

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": "bench-1", "use": "sig", "alg": "RS256"})
        port = free_port()
        self.issuer = f"http://127.0.0.1:{port}"
        documents = {
            "/.well-known/openid-configuration": {
                "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/auth",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "code_challenge_methods_supported": ["S256"],
            },
            "/jwks": {"keys": [jwk]},
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = json.dumps(documents.get(self.path, {})).encode()
                self.send_response(200 if self.path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, audience: str) -> str:
        import jwt

        now = int(time.time())
        claims = {"iss": self.issuer, "aud": audience, "sub": "svc-ci", "iat": now, "exp": now + 3600,
                  "groups": ["api_admins"], "email": "ci@corp.example"}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "bench-1", "typ": "at+jwt"})


def _wrk(url: str, seconds: int, connections: int, header: str | None) -> tuple[float, float]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99_raw = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(p99_raw.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99_raw.group(2)]
    if "Non-2xx" in out and "plain" not in url:
        raise SystemExit(f"non-2xx responses from {url}:\n{out}")
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", default="deploy/gunicorn.conf.py",
                        help="gunicorn configuration file ('' for gunicorn's defaults)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        subprocess.run(["bash", str(ROOT / "scripts/install-system-deps.sh"), "wrk"], check=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}", "REDIS_URL": "redis://127.0.0.1:6379/12",
        "REDIS_KEY_PREFIX": "bench-fa", "SECRET_KEY": "bench-" + "k" * 60, "BASE_URL": base,
        "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "0", "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "portal_sso.settings", "OIDC_CLIENT_SECRET": "bench-secret",
    }
    server = None
    try:
        fresh_django(env, DB)
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.contrib.sessions.backends.cache import SessionStore
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from broker.protocols.oidc.discovery import register
        from broker.services import roles

        provider = _Provider()
        register("bench", issuer=provider.issuer, client_id="portal", client_secret_env="OIDC_CLIENT_SECRET",
                 actor="bench")
        roles.add_role("portal_admin", actor="bench")
        roles.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="bench")
        user = get_user_model().objects.create_user("bench.alice")
        session = SessionStore()
        now = int(time.time())
        session.update({"_auth_user_id": str(user.pk), "broker_username": user.username,
                        "broker_roles": ["portal_admin"], "broker_idp": "bench",
                        "broker_email": "alice@corp.example", "broker_auth_at": now, "broker_seen_at": now})
        session.save()
        token = provider.token(settings.API_AUDIENCE)

        server = subprocess.Popen(
            # The production configuration (deploy/gunicorn.conf.py), bound and sized here.
            [sys.executable, "-m", "gunicorn", *(["-c", args.config] if args.config else []),
             "portal_sso.wsgi",
             "-b", f"127.0.0.1:{port}", "-w", str(args.workers), "--access-logfile", "/dev/null",
             "--error-logfile", "-"],
            cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        cookie = f"Cookie: {settings.SESSION_COOKIE_NAME}={session.session_key}"
        bearer = f"Authorization: Bearer {token}"
        for header, role in ((cookie, "portal_admin"), (bearer, "portal_admin")):
            name, value = header.split(": ", 1)
            req = urllib.request.Request(f"{base}/auth/verify?role={role}", headers={name: value})
            with urllib.request.urlopen(req, timeout=5) as response:
                assert response.status == 200 and response.headers["X-Auth-Roles"] == "portal_admin"
        results = {
            "plain view (/healthz)": _wrk(f"{base}/healthz", args.seconds, args.connections, None),
            "forward-auth, Bearer JWT": _wrk(f"{base}/auth/verify", args.seconds, args.connections, bearer),
            "forward-auth, session cookie": _wrk(f"{base}/auth/verify", args.seconds, args.connections,
                                                 cookie),
        }
        plain = results["plain view (/healthz)"][0]
        print(f"gunicorn sync x{args.workers}, wrk -t2 -c{args.connections} -d{args.seconds}s, "
              "same 2-core host")
        for name, (rps, p99) in results.items():
            print(f"  {name:32s} {rps:8.0f} req/s  p99 {p99:6.2f} ms  ({rps / plain:.2f}x plain)")
        print("  targets: Bearer >= 5000 req/s, cookie >= 4000 req/s, p99 < 10 ms")
    finally:
        stop_and_drop(server, DB)


if __name__ == "__main__":
    main()
