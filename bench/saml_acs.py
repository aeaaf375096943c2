"""Benchmark: processing one signed SAML Response (~12 KB, signed Response AND Assertion,
RSA-2048), stock pysaml2 (xmlsec1 program) vs the broker's client (in-process xmlsec), in
one run on the same document.

Target (issue #3): median <= 3 ms per response and >= 25x faster than stock.
Run: `make bench` or `.venv/bin/python bench/saml_acs.py [--stock N] [--ours N]`.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _setup(workdir: Path):
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.update({"BROKER_VAR_DIR": str(workdir), "SECRET_KEY": "bench-" + "x" * 60,
                       "BASE_URL": "https://sso.bench", "LOG_LEVEL": "ERROR",
                       "DJANGO_SETTINGS_MODULE": "portal_sso.settings"})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import logging

    logging.getLogger("saml2").setLevel(logging.CRITICAL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stock", type=int, default=30, help="iterations for stock pysaml2")
    parser.add_argument("--ours", type=int, default=300, help="iterations for the broker")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-saml-"))
    _setup(workdir)

    from saml2 import BINDING_HTTP_POST
    from saml2.client import Saml2Client

    from broker import keys
    from broker.protocols.saml.acs import verify_response
    from broker.protocols.saml.client import build_config, client_for
    from broker.protocols.saml.metadata import register
    from broker.protocols.saml.spmetadata import sp_metadata
    from tests.saml.idp import TestIdP

    keys.generate(size=2048, actor="bench")
    test_idp = TestIdP(workdir)
    idp = register("bench", metadata_xml=test_idp.metadata_xml(), actor="bench")
    test_idp.trust_sp(sp_metadata(idp))
    # ~12 KB: a realistic enterprise user with many group memberships.
    attributes = {
        "mail": ["alice@corp.example"], "givenName": ["Alice"], "sn": ["Example"],
        "displayName": ["Alice Example"], "eduPersonPrincipalName": ["alice@corp.example"],
        "isMemberOf": [f"cn=group-{i:03d},ou=groups,dc=corp,dc=example" for i in range(38)],
    }
    xml = test_idp.response_xml(
        in_response_to="id-bench-request", destination="https://sso.bench/sso/bench/saml/acs/",
        sp_entity_id="https://sso.bench/sso/bench/saml/metadata/", attributes=attributes,
        sign_response=True, sign_assertion=True,
    )
    encoded = base64.b64encode(xml.encode()).decode()
    outstanding = {"id-bench-request": "/"}

    stock = Saml2Client(config=_stock_config(build_config(idp)))
    ours, backend = client_for(idp)

    def run_stock(n: int) -> list[float]:
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            resp = stock.parse_authn_request_response(encoded, BINDING_HTTP_POST, outstanding=outstanding)
            samples.append((time.perf_counter() - start) * 1000)
            assert resp is not None and resp.assertion is not None and resp.name_id.text == "alice"
        return samples

    def run_ours(n: int) -> list[float]:
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            # What the ACS does with the posted bytes (broker.protocols.saml.acs).
            decoded = base64.b64decode(encoded)
            resp, results = verify_response(ours, backend, encoded, decoded, outstanding,
                                            acs="https://sso.bench/sso/bench/saml/acs/")
            samples.append((time.perf_counter() - start) * 1000)
            assert resp.assertion is not None and resp.name_id.text == "alice" and all(results.values())
        return samples

    run_ours(5)  # warm-up (imports, caches)
    run_stock(2)
    ours_ms = run_ours(args.ours)
    stock_ms = run_stock(args.stock)
    med_ours, med_stock = statistics.median(ours_ms), statistics.median(stock_ms)
    p95 = sorted(ours_ms)[int(len(ours_ms) * 0.95) - 1]
    print(f"response size: {len(xml)} bytes (signed Response + signed Assertion, RSA-2048)")
    print(f"stock pysaml2 (xmlsec1 program): median {med_stock:.2f} ms over {len(stock_ms)} runs")
    print(f"broker (in-process xmlsec):      median {med_ours:.2f} ms, p95 {p95:.2f} ms "
          f"over {len(ours_ms)} runs")
    print(f"speed-up: {med_stock / med_ours:.1f}x   target: median <= 3 ms and >= 25x")


def _stock_config(config):
    config.crypto_backend = "xmlsec1"
    from saml2.sigver import get_xmlsec_binary

    config.xmlsec_binary = get_xmlsec_binary()
    return config


if __name__ == "__main__":
    main()
