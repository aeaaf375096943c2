"""Open-redirect defences for ``next`` and RelayState."""

from __future__ import annotations

import pytest
from django.test import override_settings

from broker.redirects import safe_next

DEFAULT = "/sso/me/"


@pytest.mark.parametrize("target", [
    "//evil.com",
    "//evil.com/path",
    "https:evil.com",
    "http:evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "https://evil.com/",
    "https://sso.test.evil.com/",
    "https://evil.com\\@sso.test/",
    "https://sso.test@evil.com/",
    "/ok\r\nLocation: https://evil.com",
    "\t//evil.com",
    "///evil.com",
    "",
    None,
])
def test_unsafe_targets_land_on_default(target):
    assert safe_next(target) == DEFAULT


@pytest.mark.parametrize("target", ["/admin/", "/sso/me/?x=1#frag", "/portal/apis/42"])
def test_same_site_paths_are_kept(target):
    assert safe_next(target) == target


def test_own_host_absolute_url_is_kept():
    assert safe_next("https://sso.test/portal/") == "https://sso.test/portal/"


@override_settings(REDIRECT_ALLOWED_HOSTS=["portal.example.com"])
def test_allow_listed_host_is_kept_but_only_over_https():
    assert safe_next("https://portal.example.com/apis") == "https://portal.example.com/apis"
    assert safe_next("http://portal.example.com/apis") == DEFAULT
    assert safe_next("https://portal.example.com.evil.com/") == DEFAULT
