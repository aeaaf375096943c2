"""Helpers shared by the benchmarks (each bench creates and drops its own database)."""

from __future__ import annotations

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


def stop_and_drop(server, database: str) -> None:
    """Stop the gunicorn the bench started (if any), close Django's connections, drop its DB."""
    if server is not None:
        server.terminate()
        server.wait(timeout=10)
    from django.db import connections

    connections.close_all()
    admin_sql(f"DROP DATABASE IF EXISTS {database}")
