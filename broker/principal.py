"""The normalized result of every login, whatever the protocol.

A protocol adapter (``broker.protocols.saml`` / ``.oidc``) turns what its library verified
into one ``Principal``; identity, roles, audit and sessions only ever see this object.
Pure: no Django imports, so it is trivial to test and to reason about.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from .attribute_names import EMAIL, GROUPS, canonical_name

Attributes = Mapping[str, tuple[str, ...]]

PROTOCOLS = ("saml", "oidc")
MAX_SUBJECT_LENGTH = 512


def _as_strings(value: Any) -> list[str]:
    """Flatten one claim value into strings; nested objects become canonical JSON."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, Mapping):
        return [json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)]
    if isinstance(value, Iterable):
        out: list[str] = []
        for item in value:
            out.extend(_as_strings(item))
        return out
    return [str(value)]


def normalize_attributes(
    raw: Mapping[str, Any], attribute_map: Mapping[str, str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Fold IdP attribute names onto the broker's canonical names.

    ``attribute_map`` is the IdP's own map (source name -> canonical name) and wins over the
    built-in table of OID, LDAP and ADFS/Entra names. Unknown names are kept as they are so
    mapping rules can still address them. Values from several source names that land on
    one canonical name are merged in order, without duplicates.
    """
    idp_map = attribute_map or {}
    merged: dict[str, list[str]] = {}
    for name, value in raw.items():
        target = idp_map.get(name) or canonical_name(name)
        bucket = merged.setdefault(target, [])
        for item in _as_strings(value):
            if item not in bucket:
                bucket.append(item)
    return {name: tuple(values) for name, values in merged.items()}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who logged in, according to which IdP, with which (normalized) attributes.

    ``idp`` is the IdP's slug. Identity is the pair ``(idp, subject)``: never ``email``.
    """

    idp: str
    protocol: str
    subject: str
    issuer: str
    attributes: Attributes = field(default_factory=dict)
    authn_instant: datetime | None = None
    authn_context: str | None = None
    session_index: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}")
        if not self.idp:
            raise ValueError("a principal needs its IdP")
        if not self.subject or not self.subject.strip():
            raise ValueError("a principal needs a non-empty subject")
        if len(self.subject) > MAX_SUBJECT_LENGTH:
            raise ValueError(f"subject longer than {MAX_SUBJECT_LENGTH} characters")
        frozen = MappingProxyType({k: tuple(v) for k, v in self.attributes.items()})
        object.__setattr__(self, "attributes", frozen)

    @property
    def key(self) -> tuple[str, str]:
        return (self.idp, self.subject)

    def first(self, name: str) -> str | None:
        values = self.attributes.get(name, ())
        return values[0] if values else None

    @property
    def email(self) -> str | None:
        return self.first(EMAIL)

    @property
    def groups(self) -> tuple[str, ...]:
        return self.attributes.get(GROUPS, ())

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for sessions, audit payloads and the admin's test login."""
        return {
            "idp": self.idp,
            "protocol": self.protocol,
            "subject": self.subject,
            "issuer": self.issuer,
            "attributes": {k: list(v) for k, v in self.attributes.items()},
            "authn_instant": self.authn_instant.isoformat() if self.authn_instant else None,
            "authn_context": self.authn_context,
            "session_index": self.session_index,
        }
