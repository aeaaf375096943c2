"""The audit signing key: Ed25519, separate from the SP's SAML keys. No Django imports.

``audit keygen`` writes the private key (PEM PKCS#8, mode 0600, folder 0700) to
``AUDIT_SIGNING_KEY_FILE`` and the public key beside it as ``<stem>.pub`` (PEM, 0644): the
file an auditor needs, with nothing secret in it. A replaced key's public half is kept as
``<stem>.<fingerprint prefix>.pub`` so older checkpoints still verify.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.files import write_atomic

from .canonical import canonical_json

logger = logging.getLogger("broker.audit")


class SigningKeyError(Exception):
    """The audit signing key is missing or unusable."""


class SigningKeyMissing(SigningKeyError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"no audit signing key at {path}; create one with: "
                         "python manage.py audit keygen")


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def public_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.stem + ".pub")


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def generate(private_path: Path, *, force: bool = False) -> tuple[str, str | None]:
    """Create a key pair; returns (new fingerprint, replaced fingerprint or None)."""
    private_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = None
    if private_path.exists():
        if not force:
            raise SigningKeyError(f"{private_path} already exists (fingerprint "
                                  f"{fingerprint(load_private(private_path).public_key())}); "
                                  "use --force to replace it")
        old_key = load_private(private_path).public_key()
        old = fingerprint(old_key)
        archived = private_path.with_name(f"{private_path.stem}.{old.split(':')[1][:16]}.pub")
        write_atomic(archived, public_pem(old_key), 0o644)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_atomic(private_path, pem, 0o600)
    write_atomic(public_path(private_path), public_pem(key.public_key()), 0o644)
    _cache.clear()
    return fingerprint(key.public_key()), old


_cache: dict[str, tuple[tuple, Ed25519PrivateKey]] = {}


def load_private(path: Path) -> Ed25519PrivateKey:
    """The private key in ``path`` (parsed once per file version)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SigningKeyMissing(path) from None
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _cache.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    if st.st_mode & 0o077:
        logger.warning("audit: %s is open to group/others (mode %o); chmod 600 it", path,
                       st.st_mode & 0o777)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} cannot be read: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} does not hold an Ed25519 private key")
    _cache[str(path)] = (stamp, key)
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key from a PEM file (SubjectPublicKeyInfo)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the public key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SigningKeyError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} is not an Ed25519 public key")
    return key


def known_public_keys(private_path: Path) -> dict[str, Ed25519PublicKey]:
    """Every public key kept beside the signing key (current and replaced), by fingerprint."""
    keys: dict[str, Ed25519PublicKey] = {}
    folder = private_path.parent
    if folder.is_dir():
        for pub in sorted(folder.glob(f"{private_path.stem}*.pub")):
            with contextlib.suppress(SigningKeyError):
                key = load_public(pub)
                keys[fingerprint(key)] = key
    with contextlib.suppress(SigningKeyError, OSError):
        if private_path.exists():
            key = load_private(private_path).public_key()
            keys[fingerprint(key)] = key
    return keys


def sign(key: Ed25519PrivateKey, statement: dict[str, Any]) -> str:
    return base64.b64encode(key.sign(canonical_json(statement))).decode("ascii")


def verify(key: Ed25519PublicKey, statement: dict[str, Any], signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), canonical_json(statement))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
