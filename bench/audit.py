"""Audit log benchmark (issue 5). Targets on the 2-core CI machine:

* append throughput with 8 concurrent writer processes >= 2,000 events/s, chain intact
  (and the sealer's critical section reported: the time the chain lock is held);
* export of 1,000,000 events <= 30 s and <= 200 MB peak memory;
* offline verification of that export <= 30 s and <= 200 MB peak memory.

Creates its own database (``bench_audit`` on the server of ``DATABASE_URL``, default
postgres://postgres@127.0.0.1:5432) and drops it at the end; keys and files in a temp folder.

    .venv/bin/python bench/audit.py [--writers 8] [--seconds 15] [--events 1000000]

Append: each writer calls ``audit.record`` in a loop, in autocommit (the target) and then each
event in its own ``transaction.atomic`` (as a login does); sealing runs after the commits as in
production (``broker.audit.background``). Reported: events/s, CPU per event (writers and their
PostgreSQL backends, so a number that holds on a busy shared machine too), seal batch sizes and
the critical section (time the chain lock is held, timed by the server and by the client).

Export and offline verification each run twice in a fresh process: once with tracemalloc (peak
of Python allocations) and once without (the time; tracemalloc slows Python down several-fold).
Peak memory is the process's own high-water RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
BENCH_DB = "bench_audit"


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/portal_sso"
    return urlunsplit(urlsplit(url)._replace(path=""))


def _env(tmp: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": f"{_server_url()}/{BENCH_DB}",
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        "SECRET_KEY": "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz-bench",
        "BROKER_VAR_DIR": str(tmp / "var"),
        "AUDIT_SIGNING_KEY_FILE": str(tmp / "audit" / "ed25519.key"),
        "AUDIT_CHECKPOINT_SINK": str(tmp / "audit" / "checkpoints.jsonl"),
        "AUDIT_CHECKPOINT_EVERY": "1000",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "portal_sso.settings",
    }


def _setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{_server_url()}/postgres", autocommit=True) as conn:
        conn.execute(sql)


# --- 1. append throughput -----------------------------------------------------------------------


def _backend_cpu() -> float:
    """CPU seconds used so far by the PostgreSQL backends serving the bench database (/proc)."""
    import psycopg

    with psycopg.connect(f"{_server_url()}/postgres", autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [BENCH_DB])]
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _writer(env: dict[str, str], n: int, barrier, seconds: float, queue, seal: bool, atomic: bool,
            sampled) -> None:
    _setup_django(env)
    from django.db import transaction

    from broker import audit, context
    from broker.audit import chain

    if not seal:  # baseline: the bare inserts, nobody seals
        chain.schedule_seal = lambda *a, **k: None

    from broker.audit import background

    roles = ["portal_user", "api_reader"]
    with transaction.atomic():  # warm the connection
        audit.record("bench.warmup", actor=f"w{n}")
    chain.reset_stats()
    barrier.wait()
    deadline, count, cpu = time.time() + seconds, 0, time.process_time()
    with context.acting(actor=f"user{n}", source_ip="10.0.0.1", request_id=f"req-{n}"):
        while time.time() < deadline:
            if atomic:
                with transaction.atomic():
                    audit.record("login.succeeded", idp="corp", subject=f"user{n}-{count}@corp.example",
                                 roles_granted=roles, roles_revoked=[], protocol="saml", session=f"s{count}")
            else:
                audit.record("login.succeeded", idp="corp", subject=f"user{n}-{count}@corp.example",
                             roles_granted=roles, roles_revoked=[], protocol="saml", session=f"s{count}")
            count += 1
    background.flush()
    queue.put({"writer": n, "events": count, "cpu": time.process_time() - cpu, "stats": chain.stats(),
               "samples": chain.raw_samples()})
    sampled.wait(60)  # keep the connections open until the parent has read the backends' CPU


def bench_append(env: dict[str, str], writers: int, seconds: float, seal: bool = True,
                 atomic: bool = False) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    barrier = ctx.Barrier(writers + 1)  # start together, once every writer has imported Django and connected
    sampled = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(env, n, barrier, seconds, queue, seal, atomic, sampled))
             for n in range(writers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    pg_before = _backend_cpu()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    pg_cpu = _backend_cpu() - pg_before
    sampled.set()
    for p in procs:
        p.join(timeout=30)
    from broker.audit import chain
    from broker.audit.verify import verify_database
    from broker.models import AuditEvent

    rest = chain.seal()
    report = verify_database(public_keys={})
    events = sum(r["events"] for r in results)
    cpu = sum(r["cpu"] for r in results)
    total_cpu_ms = 1000 * (cpu + pg_cpu) / events if events else 0
    from broker.audit.chain import percentiles

    client = [s for r in results for s in r["samples"]["client"]]
    server = [s for r in results for s in r["samples"]["server"]]
    seals = sum(r["stats"]["seals"] for r in results)
    head = AuditEvent.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", flat=True).first()
    total = AuditEvent.objects.count()

    return {
        "writers": writers, "seconds": seconds, "events": events, "events_per_s": events / seconds,
        "cpu_ms_per_event": {"writers (python, incl. sealing)": 1000 * cpu / events if events else 0,
                             "postgres backends": 1000 * pg_cpu / events if events else 0,
                             "total": total_cpu_ms},
        "events_per_s_if_2_idle_cores": 2000 / total_cpu_ms if total_cpu_ms else 0,
        "seals": seals, "events_per_seal": events / seals if seals else 0,
        "critical_section_ms": {"server (lock acquired -> update done)": percentiles(server),
                                "client (lock seen -> commit acknowledged)": percentiles(client)},
        "lock_held_share_server": sum(server) / seconds,
        "sealed_after_run": rest.sealed, "chain_ok": report.ok, "head_seq": head, "rows": total,
        "gap_free": head == total, "problems": [p.text() for p in report.problems[:5]],
    }


# --- 2. one million events ----------------------------------------------------------------------


def _event(i: int, base) -> tuple:
    import datetime as dt

    ok = i % 10
    return (base + dt.timedelta(milliseconds=30 * i), "login.succeeded" if ok else "login.failed",
            "success" if ok else "failure", f"user{i % 5000}@corp.example", f"10.{i % 250}.0.{i % 200}",
            f"{i:032x}", "corp", f"user{i % 5000}@corp.example", "" if ok else "saml_audience",
            json.dumps({"roles_granted": ["portal_user"] if ok else [], "roles_revoked": [],
                        "protocol": "saml", "session": f"{i:016x}"}))


COLUMNS = ("time", "action", "outcome", "actor", "source_ip", "request_id", "idp", "subject", "reason",
           "data")


def fill(total: int, sample: int = 100_000) -> dict:
    """``total`` events: ``sample`` of them COPYed unsealed and sealed by the real sealer (its bulk
    rate is reported); the rest COPYed already chained (hashes computed here with the same code,
    insert trigger off for the COPY: the bench's own throwaway database) to keep the bench short."""
    import datetime as dt

    from django.db import connection

    from broker.audit import chain, setup
    from broker.audit.canonical import event_hash
    from broker.audit.rows import row_body

    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    connection.ensure_connection()
    raw = connection.connection
    t0 = time.perf_counter()
    with raw.cursor().copy(f"COPY broker_auditevent ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for i in range(sample):
            copy.write_row(_event(i, base))
    t1 = time.perf_counter()
    result = chain.seal(batch=20_000)
    t2 = time.perf_counter()
    seq, prev = result.head_seq, result.head_hash
    next_id = raw.execute("SELECT max(id) + 1 FROM broker_auditevent").fetchone()[0]
    raw.execute("ALTER TABLE broker_auditevent DISABLE TRIGGER broker_audit_event_insert")
    try:
        with raw.cursor().copy(f"COPY broker_auditevent (id, {', '.join(COLUMNS)}, seq, prev_hash, hash) "
                               "FROM STDIN") as copy:
            for i in range(sample, total):
                values = _event(i, base)
                seq += 1
                row = dict(zip(COLUMNS, values, strict=True), id=next_id)
                row["data"] = json.loads(row["data"])
                digest = event_hash(row_body(row, seq), prev)
                copy.write_row((next_id, *values, seq, prev, digest))
                prev, next_id = digest, next_id + 1
    finally:
        for statement in setup.enable_statements():
            raw.execute(statement)
    raw.execute("SELECT setval(pg_get_serial_sequence('broker_auditevent', 'id'), %s)", [next_id])
    raw.execute("VACUUM ANALYZE broker_auditevent")
    return {"events": total, "sealer_bulk": {"events": result.sealed, "copy_s": t1 - t0, "seal_s": t2 - t1,
                                             "events_per_s": result.sealed / (t2 - t1)},
            "prechained_fill_s": time.perf_counter() - t2}


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would include the parent's before exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured(target: str, env: dict[str, str], args: list[str], queue) -> None:
    """Run one phase in a fresh process; report time, peak RSS and the tracemalloc peak."""
    _setup_django(env)
    tracemalloc.start()
    t0 = time.perf_counter()
    if target == "export":
        import datetime as dt

        from broker.audit import export

        filters = export.Filters(since=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                                 until=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
        prepared = export.prepare(filters, "jsonl", actor="bench", destination="file")
        manifest = export.write(prepared, Path(args[0]))
        detail = {"count": manifest["count"], "bytes": Path(args[0]).stat().st_size}
    else:
        from broker.audit import offline, signing

        report = offline.verify_export(Path(args[0]), signing.load_public(Path(args[1])))
        detail = {"ok": report.ok, "summary": report.summary,
                  "problems": [p.text() for p in report.problems[:3]]}
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    queue.put({"seconds": elapsed, "peak_rss_mb": peak_rss_mb(),
               "tracemalloc_peak_mb": peak / 2**20, **detail})


def measured(target: str, env: dict[str, str], *args: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measured, args=(target, env, list(args), queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join(timeout=60)
    return result


def _untraced(target: str, env: dict[str, str], *args: str) -> dict:
    code = f"from bench.audit import _run_untraced; _run_untraced({target!r}, {list(args)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, **env}, check=True,
                          capture_output=True, text=True, timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_untraced(target: str, args: list[str]) -> None:
    t0 = time.perf_counter()
    if target == "export":
        import datetime as dt

        import django

        django.setup()
        t0 = time.perf_counter()

        from broker.audit import export

        filters = export.Filters(since=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                                 until=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
        export.write(export.prepare(filters, "jsonl", actor="bench", destination="file"), Path(args[0]))
    else:
        from broker.audit import offline, signing

        assert offline.verify_export(Path(args[0]), signing.load_public(Path(args[1]))).ok
    print(json.dumps({"target": target, "seconds": time.perf_counter() - t0,
                      "peak_rss_mb": peak_rss_mb()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--skip-big", action="store_true", help="Only the append benchmark.")
    parser.add_argument("--baseline", action="store_true", help="Also measure inserts without sealing.")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    env = _env(tmp)
    _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    _admin(f"CREATE DATABASE {BENCH_DB}")
    results: dict = {}
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env={**os.environ, **env},
                       check=True, timeout=300)
        subprocess.run([sys.executable, "manage.py", "audit", "keygen"], cwd=REPO, env={**os.environ, **env},
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
        _setup_django(env)
        results["load_average_before"] = os.getloadavg()
        if args.baseline:
            base = bench_append(env, args.writers, args.seconds, seal=False)
            results["baseline"] = {"events_per_s": base["events_per_s"], "events": base["events"]}
            print(json.dumps({"baseline (inserts, no sealing)": results["baseline"]}, indent=2), flush=True)
        results["append"] = bench_append(env, args.writers, args.seconds)
        print(json.dumps({"append (autocommit record())": results["append"]}, indent=2), flush=True)
        results["append_tx"] = bench_append(env, args.writers, args.seconds, atomic=True)
        print(json.dumps({"append (one transaction per event)": results["append_tx"]}, indent=2), flush=True)
        if not args.skip_big:
            from broker.audit import chain

            chain.reset_stats()
            results["fill"] = fill(args.events)
            print(json.dumps({"fill": results["fill"]}, indent=2), flush=True)
            out = tmp / "export.jsonl"
            results["export"] = measured("export", env, str(out))
            results["export"]["untraced"] = _untraced("export", env, str(tmp / "export2.jsonl"))
            (tmp / "export2.jsonl").unlink(missing_ok=True)
            print(json.dumps({"export": results["export"]}, indent=2), flush=True)
            pub = str(tmp / "audit" / "ed25519.pub")
            results["verify"] = measured("verify", env, str(out), pub)
            results["verify"]["untraced"] = _untraced("verify", env, str(out), pub)
            print(json.dumps({"verify (offline)": results["verify"]}, indent=2), flush=True)
            from broker.audit import signing
            from broker.audit.verify import verify_database

            t0 = time.perf_counter()
            report = verify_database(public_keys=signing.known_public_keys(tmp / "audit" / "ed25519.key"))
            results["verify_database"] = {"seconds": time.perf_counter() - t0, "ok": report.ok,
                                          "summary": report.summary}
            print(json.dumps({"verify (database)": results["verify_database"]}, indent=2), flush=True)
    finally:
        from django.db import connections

        connections.close_all()
        _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)
    append = results.get("append", {})
    verdict = {
        "append >= 2000 events/s, chain intact": bool(
            append.get("events_per_s", 0) >= 2000 and append.get("chain_ok") and append.get("gap_free")),
    }
    if "export" in results:
        for phase in ("export", "verify"):
            r = results[phase]
            verdict[f"{phase} 1M <= 30 s, <= 200 MB"] = bool(
                r.get("ok", True) and r["untraced"]["seconds"] <= 30
                and max(r["peak_rss_mb"], r["untraced"]["peak_rss_mb"]) <= 200)
    print(json.dumps({"targets": verdict}, indent=2))
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
