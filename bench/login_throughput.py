"""Benchmark: full SAML logins end to end against gunicorn: begin (AuthnRequest, pending
state in Redis), then the IdP's response (signed ahead of time) POSTed to the ACS, which
verifies it, resolves the identity, syncs roles, audits and starts a session.

Target (issue #7): >= 500 logins/s per instance, zero errors, exactly one
``login.succeeded`` audit event per login. Bounded: --logins responses (signed before the
clock starts), --seconds at most. The begins are timed too (concurrently, before signing), so
"full logins" is what the server did per second of begin + ACS work. Also printed: a plain
view on the same server and load generator (baseline), the CPU each process used per login,
and where one login's time goes (bench/login_breakdown.py).
Run: `make bench` or `.venv/bin/python bench/login_throughput.py [--logins 3000]`.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import cpu_by_process, free_port, fresh_django, stop_and_drop  # noqa: E402
from login_breakdown import breakdown  # noqa: E402

DB = "bench_login"


def _load(port: int, requests: list[tuple[str, str, bytes | None, dict]], threads: int,
          deadline: float, ok: Callable[[http.client.HTTPResponse], bool]) -> tuple[int, int, list]:
    """Send each (method, path, body, headers) once, from ``threads`` keep-alive clients,
    until done or ``deadline``. Returns (good, bad, latencies in ms)."""
    lock = threading.Lock()
    index = {"next": 0}
    outcome = {"ok": 0, "failed": 0}
    latencies: list[float] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        while time.monotonic() < deadline:
            with lock:
                i = index["next"]
                index["next"] += 1
            if i >= len(requests):
                break
            method, path, body, headers = requests[i]
            start = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            elapsed = (time.perf_counter() - start) * 1000
            good = ok(response)
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port)
            with lock:
                outcome["ok" if good else "failed"] += 1
                latencies.append(elapsed)
        conn.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return outcome["ok"], outcome["failed"], latencies


def _begin(port: int, n: int, threads: int) -> tuple[list[tuple[str, str]], float]:
    """n logins started concurrently: [(binding cookie, Location with the signed AuthnRequest)]
    and the seconds it took."""
    started: list[tuple[str, str]] = []

    def keep(response: http.client.HTTPResponse) -> bool:
        if response.status != 302:
            return False
        started.append((response.getheader("Set-Cookie").split(";", 1)[0], response.getheader("Location")))
        return True

    t0 = time.perf_counter()
    _, failed, _ = _load(port, [("GET", "/sso/bench/login/?next=/portal/", None, {})] * n, threads,
                         time.monotonic() + 600, keep)
    assert not failed, f"{failed} logins could not be started"
    return started, time.perf_counter() - t0


def _responses(idp_sim, base: str, started: list[tuple[str, str]],
               offset: int = 0) -> list[tuple[str, bytes]]:
    """The IdP's signed answer to each started login: (binding cookie, POST body)."""
    jobs = []
    for i, (cookie, location) in enumerate(started, start=offset):
        request, relay_state = idp_sim.read_redirect(location)
        xml = idp_sim.response_xml(
            in_response_to=request.message.id, destination=f"{base}/sso/bench/saml/acs/",
            sp_entity_id=f"{base}/sso/bench/saml/metadata/", subject=f"user{i % 500}",
            attributes={"mail": [f"user{i % 500}@corp.example"], "isMemberOf": ["api_admins"]},
        )
        body = urllib.parse.urlencode({"SAMLResponse": base64.b64encode(xml.encode()).decode(),
                                       "RelayState": relay_state}).encode()
        jobs.append((cookie, body))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logins", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="concurrent clients")
    parser.add_argument("--breakdown", type=int, default=300, help="logins timed step by step")
    parser.add_argument("--sp-key-size", type=int, default=4096,
                        help="SP signing key (signs each AuthnRequest): the default SAML_KEY_SIZE")
    parser.add_argument("--config", default="deploy/gunicorn.conf.py",
                        help="gunicorn configuration file ('' for gunicorn's defaults)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-login-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}", "REDIS_URL": "redis://127.0.0.1:6379/12",
        "REDIS_KEY_PREFIX": "bench-login", "SECRET_KEY": "bench-" + "k" * 60, "BASE_URL": base,
        "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "0", "LOG_LEVEL": "INFO",  # the default
        "DJANGO_SETTINGS_MODULE": "portal_sso.settings", "SAML_KEY_DIR": str(workdir / "sp"),
        "BROKER_VAR_DIR": str(workdir),
    }
    server = None
    try:
        fresh_django(env, DB)
        import logging

        for handler in logging.getLogger().handlers:  # the server's log lines cost the same here,
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115  but are not printed
        from django.core.cache import cache
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        cache.delete_pattern("*")
        from broker import keys
        from broker.models import AuditEvent
        from broker.protocols.saml.crypto import InProcessCryptoBackend
        from broker.protocols.saml.metadata import register
        from broker.protocols.saml.spmetadata import sp_metadata
        from broker.services import roles
        from tests.saml.idp import TestIdP

        keys.generate(size=args.sp_key_size, actor="bench")
        idp_sim = TestIdP(workdir)
        idp_sim.server.sec.crypto = InProcessCryptoBackend()  # sign ahead of time, quickly
        idp = register("bench", metadata_xml=idp_sim.metadata_xml(), actor="bench")
        idp_sim.trust_sp(sp_metadata(idp))
        roles.add_role("portal_admin", actor="bench")
        roles.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="bench")

        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *(["-c", args.config] if args.config else []),
             "portal_sso.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers),
             "--access-logfile", "/dev/null"],
            cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)

        started, begin_s = _begin(port, args.logins, args.threads)
        jobs = _responses(idp_sim, base, started)
        events_before = AuditEvent.objects.filter(action="login.succeeded").count()

        # Baseline, same server and load generator: a plain view (/healthz), for 5 s.
        plain = [("GET", "/healthz", None, {})] * 100_000
        t0 = time.perf_counter()
        plain_ok, _, _ = _load(port, plain, args.threads, time.monotonic() + 5, lambda r: r.status == 200)
        plain_rps = plain_ok / (time.perf_counter() - t0)

        groups = {"broker (gunicorn workers)": "gunicorn", "load generator (this bench)": "login_throughput"}
        cpu_before = cpu_by_process(groups)
        form = "application/x-www-form-urlencoded"
        acs = [("POST", "/sso/bench/saml/acs/", body, {"Cookie": cookie, "Content-Type": form})
               for cookie, body in jobs]
        t0 = time.perf_counter()
        ok, failed, latencies = _load(port, acs, args.threads, time.monotonic() + args.seconds,
                                      lambda r: r.status == 302 and r.getheader("Location") == "/portal/")
        acs_s = time.perf_counter() - t0
        cpu = cpu_by_process(groups) - cpu_before
        succeeded = AuditEvent.objects.filter(action="login.succeeded").count() - events_before
        p99 = sorted(latencies)[max(0, int(len(latencies) * 0.99) - 1)]
        print(f"gunicorn sync x{args.workers}, {args.threads} concurrent clients, "
              f"same {os.cpu_count()}-core host, SP key RSA-{args.sp_key_size}")
        full = ok / (acs_s + begin_s * ok / len(started))  # the begins of the logins that completed
        print(f"  baseline, plain view (/healthz):      {plain_rps:7.0f} req/s")
        print(f"  begin (signed AuthnRequest, pending login in Redis): {len(started) / begin_s:7.0f} /s")
        print(f"  ACS (verify, identity, roles, audit, session):       {ok / acs_s:7.0f} /s  "
              f"({ok} ok, {failed} failed in {acs_s:.1f} s; median {statistics.median(latencies):.1f} ms, "
              f"p99 {p99:.1f} ms)")
        print(f"  full logins (begin + ACS):                           {full:7.0f} /s  "
              f"= {full / plain_rps:.3f}x the plain view")
        print(f"  audit: {succeeded} login.succeeded events for {ok} logins "
              f"({'exactly one each' if succeeded == ok else 'MISMATCH'})")
        print("  target: >= 500 logins/s, zero errors, one login.succeeded per login")
        print(f"  CPU per login during the ACS phase ({os.cpu_count()} cores, {acs_s:.1f} s):")
        for group, seconds in cpu.most_common(6):
            if seconds > 0.01 * acs_s:
                print(f"    {group:30s} {seconds / max(ok, 1) * 1000:6.2f} ms  "
                      f"({seconds / acs_s * 100:4.0f}% of one core)")

        # Where a login's time goes: more logins, one at a time, in this process, which seals
        # audit events in the background as a serving worker does.
        from django.test import Client

        from broker.audit import background

        background.serve_in_background()

        count = args.breakdown
        extra = _responses(idp_sim, base, _begin(port, count, args.threads)[0], offset=len(jobs))
        client = Client(SERVER_NAME="127.0.0.1")

        def post(i: int) -> None:
            cookie, body = extra[i]
            response = client.post("/sso/bench/saml/acs/", body, content_type=form, HTTP_COOKIE=cookie)
            assert response.status_code == 302 and response["Location"] == "/portal/", response.status_code

        for i in range(min(20, count // 5)):  # warm-up
            post(i)
        wall, cpu_ms, steps = breakdown(lambda i: post(i + min(20, count // 5)), count - min(20, count // 5))
        print(f"  where a login's time goes (in-process, one at a time, {wall:.2f} ms wall, "
              f"{cpu_ms:.2f} ms CPU):")
        for label, ms in steps:
            print(f"    {label:55s} {ms:6.2f} ms  {ms / wall * 100:4.0f}%")
    finally:
        stop_and_drop(server, DB)


if __name__ == "__main__":
    main()
