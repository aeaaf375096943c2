"""Benchmark: the OIDC callback and ID token validation, against a raw signature check.

* ID token validation per token: ``ProviderBackend.verify_token`` (alg allow-list, JWKS
  cache lookup, RS256 signature, iss/aud/azp/exp/iat/nbf/sub/nonce) vs a bare
  ``cryptography`` RSA-PKCS1v15-SHA256 verify of the same token, in the same run.
* Callback processing: the whole /sso/<slug>/oidc/callback/ through Django (state, code
  exchange on loopback, ID token, userinfo, identity, roles, audit, session), and the same
  minus the two back-channel round trips to the provider (measured in the same run).

Run: `make bench` or `.venv/bin/python bench/oidc_callback.py [--tokens 2000] [--logins 200]`.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--logins", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-oidc-"))
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update({"BROKER_VAR_DIR": str(workdir), "SECRET_KEY": "bench-" + "k" * 60,
                       "BASE_URL": "https://sso.test", "ALLOWED_HOSTS": "testserver,sso.test",
                       "SECURE_SSL_REDIRECT": "0", "LOG_LEVEL": "ERROR",
                       "DJANGO_SETTINGS_MODULE": "portal_sso.settings",
                       "BENCH_OIDC_SECRET": "bench-secret"})
    import django

    django.setup()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    from broker.protocols.oidc.backend import ProviderBackend
    from broker.protocols.oidc.discovery import register
    from broker.protocols.oidc.provider import Provider
    from broker.services import roles
    from tests.oidc.fake_op import FakeOP

    fake = FakeOP(accepted_secrets={"bench-secret"})
    try:
        idp = register("bench", issuer=fake.issuer, client_id=fake.client_id,
                       client_secret_env="BENCH_OIDC_SECRET", actor="bench")
        roles.add_role("portal_admin", actor="bench")
        roles.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="bench")

        # --- ID token validation vs raw RSA verify -----------------------------------------
        backend = ProviderBackend(Provider.from_idp(idp))
        token = fake.id_token("bench-nonce")
        header, payload, signature = token.split(".")
        public_key = fake.signing_rsa.public
        signing_input, raw_signature = f"{header}.{payload}".encode(), _b64(signature)
        backend.verify_token(token, nonce="bench-nonce")  # warm the JWKS cache

        def per_op(call, n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                call()
            return (time.perf_counter() - start) / n * 1e6

        ours_us = per_op(lambda: backend.verify_token(token, nonce="bench-nonce"), args.tokens)
        raw_us = per_op(lambda: public_key.verify(raw_signature, signing_input, padding.PKCS1v15(),
                                                  hashes.SHA256()), args.tokens)

        # --- callback -------------------------------------------------------------------------
        import requests

        session = requests.Session()
        callback_ms, backchannel_ms = [], []
        for _ in range(args.logins):
            client = Client()
            location = client.get("/sso/bench/login/", {"next": "/x"})["Location"]
            callback = fake.authorize(location)
            parts = urlsplit(callback)
            start = time.perf_counter()
            response = client.get(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()})
            callback_ms.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 302 and response["Location"] == "/x", response.content[:300]
            # The same two back-channel calls the callback made, timed on their own.
            start = time.perf_counter()
            session.post(fake.url("/token"), data={"grant_type": "none"}, timeout=5)
            session.get(fake.url("/userinfo"), timeout=5)
            backchannel_ms.append((time.perf_counter() - start) * 1000)
    finally:
        fake.close()
    callback_med, backchannel_med = statistics.median(callback_ms), statistics.median(backchannel_ms)
    print(f"ID token validation (broker, all checks): {ours_us:8.1f} us/token")
    print(f"raw RSA-2048 PKCS1v15-SHA256 verify:       {raw_us:8.1f} us/token  "
          f"(broker = {ours_us / raw_us:.1f}x raw)")
    print(f"callback end to end (median of {len(callback_ms)}): {callback_med:6.2f} ms, of which "
          f"~{backchannel_med:.2f} ms token+userinfo round trips on loopback -> "
          f"{callback_med - backchannel_med:.2f} ms broker processing")


if __name__ == "__main__":
    main()
