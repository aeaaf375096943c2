"""Run the broker as a real server process (gunicorn) for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The test database the fixtures write to, as DATABASE_URL for a server or CLI process."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


def terminate(proc: subprocess.Popen) -> None:
    """Stop a helper process: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerServer:
    """gunicorn serving portal_sso.wsgi with the given environment (nothing inherited but
    PATH/HOME, so what the server sees is exactly what the test says)."""

    def __init__(self, env: dict[str, str], *, migrate: bool = False, port: int | None = None,
                 production_config: bool = False) -> None:
        self.port = port or free_port()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "DJANGO_SETTINGS_MODULE": "portal_sso.settings",
            **env,
        }
        if migrate:
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
                           cwd=ROOT, env=self.env, check=True, timeout=120)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "portal_sso.wsgi", "-b", f"127.0.0.1:{self.port}",
             "-w", "1", "--timeout", "30",
             # deploy/gunicorn.conf.py (hooks, preload), its access log off: stdout is a pipe.
             *(["-c", "deploy/gunicorn.conf.py", "--access-logfile", "/dev/null"]
               if production_config else [])],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def output(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stdout.read() if self.proc.stdout else ""

    def stop(self) -> str:
        terminate(self.proc)
        return self.output()
