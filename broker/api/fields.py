"""Input fields and checks shared by the Admin API serializers: nothing reaches a service or
the database that PostgreSQL could refuse with a 500 (NUL bytes, surrogates, huge numbers,
dates out of range), and no secret is ever accepted in clear."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import serializers

from broker.redaction import is_secret_key

from .exceptions import ApiError

MAX_ATTRIBUTE_MAP_ENTRIES = 200
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def clean_text(value: str, what: str, max_length: int = 300) -> str:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise serializers.ValidationError(f"{what} must be a string of 1 to {max_length} characters")
    if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
        raise serializers.ValidationError(f"{what} contains characters that cannot be stored")
    return value


class AttributeMapField(serializers.DictField):
    """IdP attribute name -> canonical name."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=serializers.CharField(max_length=200), **kwargs)

    def to_internal_value(self, data: Any) -> dict[str, str]:
        value = super().to_internal_value(data)
        if len(value) > MAX_ATTRIBUTE_MAP_ENTRIES:
            raise serializers.ValidationError(f"at most {MAX_ATTRIBUTE_MAP_ENTRIES} entries")
        for key in value:
            clean_text(key, "an attribute name", 500)
        return value


class BoundedDateTimeField(serializers.DateTimeField):
    """A date-time whose conversion to UTC cannot overflow into a 500."""

    def to_internal_value(self, value: Any):
        try:
            return super().to_internal_value(value)
        except (OverflowError, ValueError):
            self.fail("invalid", format="ISO 8601")


class StrictSerializer(serializers.Serializer):
    # Refuses unknown fields (a typo is an error, not silently ignored) and refuses secrets in
    # clear with ``secret_not_accepted``: only references (``*_env``, ``*_file``) are taken.
    # (A comment, not a docstring: drf-spectacular would show it on every subclass.)

    def to_internal_value(self, data: Any):
        if isinstance(data, Mapping):
            writable = {name for name, f in self.fields.items() if not f.read_only}
            unknown = sorted(str(k) for k in data if k not in writable)
            secrets = [k for k in unknown if is_secret_key(k)]
            if secrets:
                raise ApiError(
                    f"secrets are never accepted in clear ({', '.join(secrets)}): give a reference "
                    "instead (client_secret_env or client_secret_file)", "secret_not_accepted")
            if unknown:
                raise serializers.ValidationError({k: ["unknown field"] for k in unknown})
        return super().to_internal_value(data)


def check_env_reference(name: str) -> str:
    """A secret given by environment variable name: only names under API_SECRET_ENV_PREFIX, so
    an API caller cannot point the broker at (and send to its IdP) another secret it holds."""
    if not _ENV_NAME.match(name):
        raise serializers.ValidationError("not a valid environment variable name")
    prefix = settings.API_SECRET_ENV_PREFIX
    if not prefix or not name.startswith(prefix):
        raise serializers.ValidationError(
            f"through the API, secret variables must be named {prefix or '(disabled)'}*"
            " (API_SECRET_ENV_PREFIX); use the CLI for others")
    return name


def check_file_reference(path: str) -> str:
    """A secret given by file path: only inside API_SECRET_FILE_DIR (off when empty)."""
    clean_text(path, "a file path", 1024)
    base = settings.API_SECRET_FILE_DIR
    if not base:
        raise serializers.ValidationError(
            "file references are not accepted through the API unless API_SECRET_FILE_DIR is set; "
            "use an environment variable reference or the CLI")
    real_base = os.path.realpath(base)
    real = os.path.realpath(path)
    if not os.path.isabs(path) or os.path.commonpath([real_base, real]) != real_base:
        raise serializers.ValidationError(f"must be an absolute path inside {base}")
    return path


MAX_JSON_DEPTH = 16
MAX_JSON_ITEMS = 10_000


def check_json_shape(value: Any, what: str) -> None:
    """Bound a free-form JSON value's nesting and size (the simulator flattens it recursively)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if depth > MAX_JSON_DEPTH or seen > MAX_JSON_ITEMS:
            raise serializers.ValidationError(
                f"{what} is nested deeper than {MAX_JSON_DEPTH} or holds more than {MAX_JSON_ITEMS} values")
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
