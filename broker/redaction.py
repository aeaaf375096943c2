"""Keep secrets out of logs, audit payloads, CLI output and error pages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"
# Keys whose values are secrets. A key naming where a secret lives (``*_env``, ``*_file``)
# is a reference, not a secret, and stays readable.
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|passphrase|private|token|credential|api_?key|signing_key|sp_key|"
    r"key_pem|_key$|^key$)",
    re.I,
)
# Names that look secret but hold where a secret lives, or a public value.
_REFERENCE_KEY = re.compile(r"(_(env|file|path|ref|endpoint|url|uri)$|^public|_public)", re.I)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _REFERENCE_KEY.search(key)


def redact(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced, recursively."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def secret_paths(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of non-empty secret-looking values in ``value`` (for refusing them)."""
    found: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            path = f"{prefix}{k}"
            if is_secret_key(str(k)) and v not in (None, ""):
                found.append(path)
            else:
                found.extend(secret_paths(v, path + "."))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found.extend(secret_paths(v, f"{prefix}{i}."))
    return found
