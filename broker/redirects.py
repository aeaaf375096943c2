"""Where a browser may be sent after login: same-site paths or allow-listed hosts only."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.utils.http import url_has_allowed_host_and_scheme


def _base_host() -> str:
    return urlsplit(settings.BASE_URL).netloc


def safe_next(target: str | None, *, default: str | None = None) -> str:
    """``target`` if it is safe to redirect to, else the default landing page.

    Safe means a path on this site (``/x``, not ``//evil.com``, ``/\\evil.com``,
    ``https:evil.com`` or ``javascript:``), or an absolute https URL whose host is our own
    or in REDIRECT_ALLOWED_HOSTS. Control characters and backslashes are always refused.
    """
    fallback = default or settings.LOGIN_REDIRECT_URL
    if not target or len(target) > 2000:
        return fallback
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target) or "\\" in target:
        return fallback
    if target.startswith("/") and not target.startswith("//"):
        # Django's check also rejects paths that browsers would read as another host.
        if url_has_allowed_host_and_scheme(target, allowed_hosts=set(), require_https=False):
            return target
        return fallback
    allowed = {_base_host(), *settings.REDIRECT_ALLOWED_HOSTS}
    parts = urlsplit(target)
    require_https = urlsplit(settings.BASE_URL).scheme == "https"
    if parts.scheme in {"http", "https"} and parts.netloc in allowed and url_has_allowed_host_and_scheme(
        target, allowed_hosts=allowed, require_https=require_https
    ):
        return target
    return fallback
