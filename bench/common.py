"""Helpers shared by the benchmarks (each bench creates and drops its own database)."""

from __future__ import annotations

import collections
import os
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin_sql(sql: str) -> None:
    """Run one statement on the server's maintenance database (CREATE/DROP DATABASE)."""
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(sql)


def fresh_django(env: dict[str, str], database: str) -> None:
    """Point this process at ``env`` (DATABASE_URL naming ``database``), recreate that
    database empty, and set Django up. Pair with ``stop_and_drop``."""
    os.environ.update(env)
    admin_sql(f"DROP DATABASE IF EXISTS {database}")
    admin_sql(f"CREATE DATABASE {database}")
    import django

    django.setup()


def stop_and_drop(server, database: str) -> None:
    """Stop the gunicorn the bench started (if any), close Django's connections, drop its DB."""
    if server is not None:
        server.terminate()
        server.wait(timeout=10)
    from django.db import connections

    connections.close_all()
    admin_sql(f"DROP DATABASE IF EXISTS {database}")


def cpu_by_process(groups: dict[str, str]) -> collections.Counter:
    """CPU seconds used so far by every process on this machine (Linux /proc), summed by
    group: a process belongs to the first group whose marker is in its command line, else to
    its program name. Take one before and one after a run and subtract."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: collections.Counter = collections.Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        group = next((g for g, marker in groups.items() if marker in cmdline), name)
        used[group] += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return used
