"""Settings for the federation broker: every knob comes from the environment.

Two modes:

* embedded default (``DATABASE_URL`` and ``REDIS_URL`` unset): SQLite under ``var/``,
  local-memory cache, cache-backed sessions; meant for ``make run`` on a laptop.
* production: PostgreSQL (psycopg 3) and Redis (django-redis), cache-backed sessions in Redis.

Each variable is documented in README.md ("Settings").
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BROKER_VAR_DIR", BASE_DIR / "var"))


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def _env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def _read_secret_file(path: str) -> str:
    """Read a secret from a file that only its owner can read (0600 or stricter)."""
    file = Path(path)
    mode = file.stat().st_mode & 0o777
    if mode & 0o077:
        raise ImproperlyConfigured(f"{path} must not be readable by group or others (mode {mode:o})")
    return file.read_text().strip()


def _dev_secret_key() -> str:
    """A development key generated once under var/ with mode 0600."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(64))
    return _read_secret_file(str(key_file))


DEBUG = _env_bool("DEBUG", False)

# An embedded default (SQLite + local memory) when no external services are configured.
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip()
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
EMBEDDED = not DATABASE_URL and not REDIS_URL

if os.environ.get("SECRET_KEY"):
    SECRET_KEY = os.environ["SECRET_KEY"]
elif os.environ.get("SECRET_KEY_FILE"):
    SECRET_KEY = _read_secret_file(os.environ["SECRET_KEY_FILE"])
elif DEBUG or EMBEDDED:
    # The embedded default is a development set-up: a per-checkout key, never committed.
    SECRET_KEY = _dev_secret_key()
else:
    raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required when DEBUG is off")

# Public base URL of the broker (scheme + host [+ port]); SAML entity IDs and OIDC
# redirect URIs are built from it, so it must be what browsers and IdPs see.
BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8000").rstrip("/")
_base = urlsplit(BASE_URL)
if _base.scheme not in {"http", "https"} or not _base.hostname:
    raise ImproperlyConfigured(f"BASE_URL must be an absolute http(s) URL, got {BASE_URL!r}")

_default_hosts = [_base.hostname]
if DEBUG or EMBEDDED:
    _default_hosts += ["127.0.0.1", "localhost", "[::1]"]
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", _default_hosts)
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", [f"{_base.scheme}://{_base.netloc}"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "broker",
]

MIDDLEWARE = [
    "broker.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin CSS/JS) straight from the WSGI app, with far-future caching.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Break-glass logins use their own database-backed session and cookie (see
    # broker/breakglass/sessions.py); everyone else keeps SESSION_ENGINE below.
    "broker.breakglass.sessions.BreakGlassSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "broker.middleware.SessionLifetimeMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal_sso.urls"
WSGI_APPLICATION = "portal_sso.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=_env_int("DB_CONN_MAX_AGE", 60),
            conn_health_checks=True,
        )
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("OPTIONS", {})
        DATABASES["default"]["OPTIONS"].setdefault(
            "connect_timeout", _env_int("DB_CONNECT_TIMEOUT", 5)
        )
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "broker.sqlite3",
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, login state and sessions ----------------------------------------------------
# Fail closed: django-redis must raise, never pretend a missing key (DESIGN.md invariants).
DJANGO_REDIS_IGNORE_EXCEPTIONS = False
REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX", "sso")

if REDIS_URL:
    _redis_options = {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        "SOCKET_CONNECT_TIMEOUT": 2,
        "SOCKET_TIMEOUT": 2,
        "IGNORE_EXCEPTIONS": False,
    }
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_KEY_PREFIX,
            "OPTIONS": _redis_options,
        },
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "broker-default",
        },
    }

SESSION_ENGINE = "broker.session_store"  # cache (Redis) sessions; see the module
SESSION_CACHE_ALIAS = "default"

# Session lifetimes: an absolute maximum from login, and an idle timeout (Keycloak's
# "SSO Session Max" and "SSO Session Idle").
SESSION_MAX_AGE = _env_int("SESSION_MAX_AGE", 10 * 3600)
SESSION_IDLE_TIMEOUT = _env_int("SESSION_IDLE_TIMEOUT", 30 * 60)
SESSION_COOKIE_AGE = SESSION_MAX_AGE
# Pending logins (SAML request IDs, OIDC state/nonce/PKCE) live this long.
LOGIN_STATE_TTL = _env_int("LOGIN_STATE_TTL", 600)

# The browser-binding cookie for pending logins. A SAML IdP POSTs cross-site, which does not
# carry the Lax session cookie; this short-lived cookie (SameSite=None over HTTPS) only binds
# the pending request to the browser that started it, and grants nothing by itself.
LOGIN_BINDING_COOKIE = "__Host-sso_login" if _base.scheme == "https" else "sso_login"

# --- SAML service provider ---------------------------------------------------------------
# SP keys: current signing/encryption key pair, and the next one published ahead of a
# rotation (``keys generate|csr|rotate``). Files are 0600.
SAML_KEY_DIR = Path(os.environ.get("SAML_KEY_DIR", VAR_DIR / "saml"))
SAML_KEY_SIZE = _env_int("SAML_KEY_SIZE", 4096)
# ACS/SLO POST bodies larger than this get 413 before any parsing.
SAML_MAX_POST_BYTES = _env_int("SAML_MAX_POST_BYTES", 256 * 1024)
SAML_METADATA_FETCH_TIMEOUT = _env_int("SAML_METADATA_FETCH_TIMEOUT", 10)
# Optional organisation/contact for our SP metadata.
SAML_SP_ORGANIZATION = os.environ.get("SAML_SP_ORGANIZATION", "API Portal SSO")
SAML_SP_CONTACT_EMAIL = os.environ.get("SAML_SP_CONTACT_EMAIL", "")

# --- OpenID Connect relying party ---------------------------------------------------------
OIDC_HTTP_TIMEOUT = _env_int("OIDC_HTTP_TIMEOUT", 5)
# JWKS cache: refetch on an unknown kid at most once per cooldown; refresh a copy older than
# the interval when convenient; never use keys older than the maximum staleness.
OIDC_JWKS_REFETCH_COOLDOWN = _env_int("OIDC_JWKS_REFETCH_COOLDOWN", 60)
OIDC_JWKS_REFRESH_INTERVAL = _env_int("OIDC_JWKS_REFRESH_INTERVAL", 3600)
OIDC_JWKS_MAX_STALENESS = _env_int("OIDC_JWKS_MAX_STALENESS", 7 * 24 * 3600)
OIDC_DISCOVERY_REFRESH_INTERVAL = _env_int("OIDC_DISCOVERY_REFRESH_INTERVAL", 24 * 3600)

# --- Bearer tokens (Admin API, forward-auth) -------------------------------------------
# Access tokens (JWT) from these OIDC IdPs (slugs; empty: every enabled OIDC IdP) are
# accepted when their audience is API_AUDIENCE. Validated locally against the cached JWKS.
API_AUDIENCE = os.environ.get("API_AUDIENCE", f"{BASE_URL}/api")
API_TOKEN_IDPS = _env_list("API_TOKEN_IDPS", [])
API_TOKEN_MAX_BYTES = _env_int("API_TOKEN_MAX_BYTES", 8192)
# How long a worker keeps IdP settings and mapping rules in memory for the hot path.
HOT_PATH_CONFIG_TTL = _env_int("HOT_PATH_CONFIG_TTL", 30)

# Default clock skew allowed for IdP timestamps, per IdP overridable.
CLOCK_SKEW_SECONDS = _env_int("CLOCK_SKEW_SECONDS", 60)

# --- Cookies and transport security ----------------------------------------------------
# Secure cookies need HTTPS; a local http:// BASE_URL (make run) cannot use them.
SECURE_COOKIES = _env_bool("SECURE_COOKIES", _base.scheme == "https")
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
# The __Host- prefix pins the cookie to this exact host, Secure, Path=/ and no Domain.
SESSION_COOKIE_NAME = "__Host-sso_session" if SECURE_COOKIES else "sso_session"
CSRF_COOKIE_NAME = "__Host-csrftoken" if SECURE_COOKIES else "csrftoken"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"

SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", SECURE_COOKIES)
# Probes and scrapers talk plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = _env_int("SECURE_HSTS_SECONDS", 31536000 if SECURE_COOKIES else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if _env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Reverse proxies whose X-Forwarded-For we believe (IPs or CIDRs), for audit source IPs.
TRUSTED_PROXIES = _env_list("TRUSTED_PROXIES", [])

# --- Redirects -------------------------------------------------------------------------
# Hosts (besides our own) that ``next`` / RelayState may send a browser to after login.
REDIRECT_ALLOWED_HOSTS = _env_list("REDIRECT_ALLOWED_HOSTS", [])
LOGIN_URL = "/sso/"
LOGIN_REDIRECT_URL = os.environ.get("LOGIN_REDIRECT_URL", "/sso/me/")

# --- Auth ------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # Vetoes password-only authenticate() (e.g. /admin/login/) for break-glass accounts:
    # they log in only at /breakglass/, with a second factor.
    "broker.breakglass.backends.BreakGlassOnlyBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Break-glass -----------------------------------------------------------------------
# Local emergency accounts (``manage.py breakglass``), logging in only at /breakglass/ with a
# password and a second factor, in a database session of their own (works with Redis down).
BREAKGLASS_SESSION_IDLE = _env_int("BREAKGLASS_SESSION_IDLE", 900)
BREAKGLASS_SESSION_MAX = _env_int("BREAKGLASS_SESSION_MAX", 12 * 3600)
BREAKGLASS_SESSION_COOKIE = "__Host-sso_breakglass" if SECURE_COOKIES else "sso_breakglass"
# Between the password step and the second factor.
BREAKGLASS_PENDING_TTL = _env_int("BREAKGLASS_PENDING_TTL", 300)
# Lifetime of the one-time security-key enrolment link printed by the CLI.
BREAKGLASS_ENROLL_TTL = _env_int("BREAKGLASS_ENROLL_TTL", 900)
# Who hears about every use: e-mail addresses and/or a webhook (JSON POST).
BREAKGLASS_ALERT_EMAILS = _env_list("BREAKGLASS_ALERT_EMAILS", [])
BREAKGLASS_ALERT_WEBHOOK = os.environ.get("BREAKGLASS_ALERT_WEBHOOK", "").strip()
BREAKGLASS_ALERT_TIMEOUT = _env_int("BREAKGLASS_ALERT_TIMEOUT", 5)
# Growing delays after failures, per account and per client IP; never a lock-out.
BREAKGLASS_THROTTLE_FREE_ATTEMPTS = _env_int("BREAKGLASS_THROTTLE_FREE_ATTEMPTS", 3)
BREAKGLASS_THROTTLE_BASE_DELAY = _env_int("BREAKGLASS_THROTTLE_BASE_DELAY", 2)
BREAKGLASS_THROTTLE_MAX_DELAY = _env_int("BREAKGLASS_THROTTLE_MAX_DELAY", 300)
BREAKGLASS_THROTTLE_WINDOW = _env_int("BREAKGLASS_THROTTLE_WINDOW", 24 * 3600)
# `check --deploy` warns when an account was neither used nor tested for this long.
BREAKGLASS_TEST_INTERVAL_DAYS = _env_int("BREAKGLASS_TEST_INTERVAL_DAYS", 90)
# WebAuthn relying party: the host and origin browsers see.
BREAKGLASS_WEBAUTHN_RP_ID = os.environ.get("BREAKGLASS_WEBAUTHN_RP_ID", _base.hostname or "")
BREAKGLASS_WEBAUTHN_ORIGIN = os.environ.get(
    "BREAKGLASS_WEBAUTHN_ORIGIN", f"{_base.scheme}://{_base.netloc}"
).rstrip("/")
# django-otp: our own database throttle gives the delays (and says how long); the device's
# silent throttle would reject a correct code during its own back-off.
OTP_TOTP_THROTTLE_FACTOR = 0
OTP_TOTP_ISSUER = os.environ.get("OTP_TOTP_ISSUER", "API Portal SSO")
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Outgoing mail (break-glass alerts).
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = _env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = (
    _read_secret_file(os.environ["EMAIL_HOST_PASSWORD_FILE"])
    if os.environ.get("EMAIL_HOST_PASSWORD_FILE") else os.environ.get("EMAIL_HOST_PASSWORD", "")
)
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = _env_int("EMAIL_TIMEOUT", 5)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", f"sso-broker@{_base.hostname}")

# --- Audit ---------------------------------------------------------------------------
# Append-only, hash-chained audit log with signed checkpoints (README "Audit log").
# Ed25519 signing key (``audit keygen``; 0600, separate from the SP keys); its public half is
# written beside it as ``<name>.pub`` for auditors.
AUDIT_SIGNING_KEY_FILE = Path(os.environ.get("AUDIT_SIGNING_KEY_FILE", VAR_DIR / "audit" / "ed25519.key"))
# A signed checkpoint every N sealed events, and when events arrive T seconds after the last
# one (``audit checkpoint`` from cron covers idle periods; 0 turns a trigger off).
AUDIT_CHECKPOINT_EVERY = _env_int("AUDIT_CHECKPOINT_EVERY", 1000)
AUDIT_CHECKPOINT_SECONDS = _env_int("AUDIT_CHECKPOINT_SECONDS", 300)
# Every checkpoint is also appended to this file outside the database (JSON lines), and
# POSTed to the webhook when set (failures are logged, never fatal).
AUDIT_CHECKPOINT_SINK = Path(os.environ.get("AUDIT_CHECKPOINT_SINK", VAR_DIR / "audit" / "checkpoints.jsonl"))
AUDIT_CHECKPOINT_WEBHOOK = os.environ.get("AUDIT_CHECKPOINT_WEBHOOK", "").strip()
AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT = _env_int("AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT", 5)
# Test runs only (default: on under pytest): lets a superuser session TRUNCATE the audit
# tables, which Django's flush between transactional tests needs. Never set it in production.
AUDIT_ALLOW_TEST_FLUSH = _env_bool("AUDIT_ALLOW_TEST_FLUSH", "pytest" in sys.modules)
if AUDIT_ALLOW_TEST_FLUSH and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    _db_options["options"] = f"{_db_options.get('options', '')} -c broker.audit_allow_truncate=on".strip()

# --- Misc ------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collectstatic (make run, tests), serve from the apps' static folders directly.
WHITENOISE_USE_FINDERS = DEBUG or EMBEDDED or not STATIC_ROOT.exists()
if not STATIC_ROOT.exists():
    try:
        STATIC_ROOT.mkdir(parents=True)
    except OSError:
        pass  # read-only image without collected files: the finders serve them

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "broker.middleware.RequestIdLogFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # pysaml2 logs every assertion's NameID (personal data) and more at INFO, on every
        # login; the broker's own log lines and audit events say what happened.
        "saml2": {"level": "WARNING"},
    },
}

# --- Admin API -----------------------------------------------------------------------------
# Django REST framework under /api/v1/, OpenAPI 3 at /api/schema/, docs at /api/docs/ (assets
# served locally by drf-spectacular-sidecar: nothing is fetched from a CDN). See broker/api/.
# Callers holding one of these roles (from Bearer token claims or the session) get full access;
# a Django superuser's session (break-glass) counts as admin.
API_ADMIN_ROLES = _env_list("API_ADMIN_ROLES", ["portal_admin"])
# Read-only access to the audit log (events and export), nothing else.
API_AUDITOR_ROLES = _env_list("API_AUDITOR_ROLES", ["auditor"])
# Secret references accepted through the API (the CLI is not restricted): environment
# variables must start with this prefix, files must lie inside this folder (empty: no file
# references through the API). Otherwise an API admin could point an IdP at any secret the
# broker holds (SECRET_KEY, SP keys) and have it sent to a token endpoint of their choosing.
API_SECRET_ENV_PREFIX = os.environ.get("API_SECRET_ENV_PREFIX", "OIDC_SECRET_")
API_SECRET_FILE_DIR = os.environ.get("API_SECRET_FILE_DIR", "").strip()
# Management listener: when set (e.g. "8443"), /admin/ and /api/ answer 404 unless the request
# arrived on one of these server ports (gunicorn's GUNICORN_ADMIN_BIND). Empty: everywhere.
ADMIN_SURFACES_PORTS = _env_list("ADMIN_SURFACES_PORTS", [])
MIDDLEWARE.insert(
    MIDDLEWARE.index("broker.middleware.RequestIdMiddleware") + 1,
    "broker.api.middleware.AdminSurfacesPortMiddleware",
)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "broker.api.authentication.BearerAuthentication",
        "broker.api.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["broker.api.permissions.IsApiAdmin"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["broker.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "broker.api.pagination.Pagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "broker.api.exceptions.handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Federation broker Admin API",
    "DESCRIPTION": (
        "Identity providers, roles, mapping rules, federated identities, break-glass accounts and "
        "the audit log. Authenticate with `Authorization: Bearer <access token>` from a configured "
        "OpenID Provider (audience API_AUDIENCE) or a browser session (CSRF token on unsafe "
        'methods). Errors are JSON: `{"code": "...", "message": "..."}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "broker.api.schema.add_error_responses",
    ],
}
