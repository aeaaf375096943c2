"""Gunicorn settings for the federation broker (``gunicorn -c deploy/gunicorn.conf.py portal_sso.wsgi``).

Every value can be overridden from the environment; the defaults suit the container image
(Dockerfile) and ``make serve``. Gunicorn reads this file as Python: module-level names are settings.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {raw!r}")
    return value


def _cpu_count() -> int:
    """CPUs this process may actually use.

    ``os.cpu_count()`` reports the host's CPUs, not the container's share: on a 64-core node a
    pod limited to 1 CPU would start 129 workers, each with its own PostgreSQL connection.
    Use the CPU affinity mask (cpusets) and the cgroup v2 quota (``docker --cpus``, Kubernetes
    CPU limits) when they are smaller.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota visible: keep the affinity count
    return max(1, count)


# --- Sockets ---------------------------------------------------------------------------------
# 0.0.0.0 because inside a container the port is reached through the container's interface;
# outside one, set GUNICORN_BIND=127.0.0.1:8000 and put the reverse proxy in front.
bind = [addr.strip() for addr in os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").split(",") if addr.strip()]
# Optional second listener (e.g. 0.0.0.0:8443) so the network can route /admin/ and /api/ to a
# port that is not published to the Internet. Gunicorn serves the SAME application, in plain
# HTTP, on every listener: the separation is only as good as the proxy / network policy that
# decides who reaches which port.
_admin_bind = os.environ.get("GUNICORN_ADMIN_BIND", "").strip()
if _admin_bind:
    bind.append(_admin_bind)

# --- Workers ---------------------------------------------------------------------------------
# Sync workers: one request at a time per process. The broker's work is short, CPU-light
# request/response plus blocking calls to PostgreSQL, Redis and the IdPs (JWKS, metadata,
# token endpoint), all with timeouts; sync workers keep Django's thread-local DB connections
# and the request-context (broker.context) trivially correct.
worker_class = "sync"
# 2 x CPUs + 1 (gunicorn's rule of thumb). GUNICORN_WORKERS sets the number explicitly; use it
# to cap the total of PostgreSQL connections: 2 x replicas x workers must stay under max_connections
# (minus what migrations, admin shells and other services need).
workers = _env_int("GUNICORN_WORKERS", 0) or 2 * _cpu_count() + 1
# One request thread per worker, so requests hold at most ONE database connection per worker
# (Django keeps one connection per thread, for DB_CONN_MAX_AGE seconds); the audit sealer
# thread (broker/audit/background.py) holds a second one while events arrive and closes it
# when idle. So count TWO per worker. threads > 1 would silently switch to the gthread worker
# and multiply connections by the thread count.
threads = 1

# Recycle each worker after this many requests to bound slow memory growth (lxml/xmlsec
# caches, fragmentation). The jitter staggers restarts so workers do not all recycle at once.
# Large on purpose: forward-auth answers thousands of requests a second, and a recycled worker
# leaves a gap of up to a second (the arbiter's poll) before its replacement serves; at 1,000
# that halved the throughput of both /auth/verify and logins (bench/login_throughput.py).
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 200_000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 20_000)

# A sync worker silent this long is killed. Outbound calls (IdP metadata, JWKS, token endpoint,
# DB connect) have their own shorter timeouts, so 30 s only trips on a real hang.
timeout = _env_int("GUNICORN_TIMEOUT", 30)
# On SIGTERM, in-flight requests (a login being completed) get this long to finish. Keep the
# orchestrator's grace period longer (Kubernetes terminationGracePeriodSeconds, `docker stop -t`).
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# The sync worker closes the connection after each response and ignores this; it only applies
# if the worker class is ever changed.
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)

# Load Django once in the master, then fork: workers share the imported code's memory pages
# and a broken configuration (ImproperlyConfigured) fails at start, not in every worker.
preload_app = True


def pre_fork(server, worker):
    """Never let a worker inherit a database connection from the master.

    With ``preload_app`` the master imports Django. It does not query the database, but if
    anything ever did, every forked worker would share that one socket and corrupt the
    protocol stream. Closing in the master, before fork, is safe; closing in the child would
    send a Terminate on the shared socket.
    """
    from django.apps import apps

    if apps.ready:
        from django.db import connections

        connections.close_all()


def post_worker_init(worker):
    """A serving worker seals audit events in its background thread only, in batches: no
    request waits on the hash chain (broker.audit.background)."""
    from broker.audit import background

    background.serve_in_background()


# The worker heartbeat file is fchmod'ed constantly; on overlayfs/disk-backed /tmp that can
# block a worker. /dev/shm is a tmpfs in Docker and Kubernetes. (Gunicorn creates the file with
# mkstemp: unique name, mode 0600, unlinked at once, so a shared directory is fine.)
_SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None

# Gunicorn's runtime control socket (gunicornc: resize workers, reload) is off by default in
# this image: nothing needs it, and it would otherwise be created under $HOME. Set
# GUNICORN_CONTROL_SOCKET=/path/to/gunicorn.ctl to enable it.
_control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
if _control_socket:
    control_socket = _control_socket
else:
    control_socket_disable = True

# --- Proxy -------------------------------------------------------------------------------------
# Addresses whose X-Forwarded-Proto/-Ssl gunicorn believes when it sets wsgi.url_scheme (which
# Django's request.is_secure() reads, and which SAML ACS / OIDC redirect URIs are checked
# against). Only the reverse proxy's address(es) or CIDRs; "*" only if the network guarantees
# nothing but the proxy can reach this port. The app's own X-Forwarded-For handling is separate
# (settings TRUSTED_PROXIES).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# --- Logging -----------------------------------------------------------------------------------
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")  # "-" = stdout, for the container runtime
errorlog = os.environ.get("GUNICORN_ERRORLOG", "-")  # "-" = stderr
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# The path WITHOUT the query string (%(m)s %(U)s, not %(r)s): OIDC callbacks carry the
# authorization code and state, and SAML redirect-binding URLs carry SAMLRequest/RelayState,
# in the query. The Referer is left out for the same reason (IdP pages' URLs carry them too).
# rid= is the X-Request-ID response header set by broker.middleware.RequestIdMiddleware, the
# same ID that appears in the application's log lines and in audit events.
access_log_format = (
    '%(h)s xff="%({x-forwarded-for}i)s" %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms '
    'rid=%({x-request-id}o)s "%(a)s"'
)

proc_name = "portal-sso"
