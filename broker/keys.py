"""The SP's key pairs: SAML signing and decryption (later also OIDC ``private_key_jwt``).

Files in ``settings.SAML_KEY_DIR`` (0700): ``{slot}.key`` (PEM PKCS#8, unencrypted, 0600) and
``{slot}.crt`` (X.509 PEM). Slots: ``current`` signs and decrypts; ``next`` is published in our
metadata ahead of a rotation (and decrypts); ``previous`` only decrypts in-flight assertions
after an activation, until it is retired.

Changes run under an exclusive lock with an undo journal: if a write fails or the process dies
half-way, the files are put back as they were, so there is never a missing ``current`` nor a
key beside a certificate that is not its own. Each change is audited in the same database
transaction ("no audit, no action"); call the changing functions outside a transaction.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from broker import audit, context
from broker.files import write_atomic

logger = logging.getLogger("broker.keys")

SLOTS = ("current", "next", "previous")
MIN_KEY_SIZE, MAX_KEY_SIZE = 2048, 16384
DEFAULT_DAYS = 3650  # like Shibboleth's keygen.sh: 10 years
_JOURNAL, _LOCK = ".journal.json", ".lock"
_HOSTNAME = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


class KeysError(Exception):
    """The key store is unusable."""


class KeysMissing(KeysError):
    def __init__(self, slot: str = "current") -> None:
        super().__init__(f"The SP has no {slot} key pair in {key_dir()}. "
                         "Create one with: python manage.py keys generate")


class KeysInvalid(KeysError):
    """A slot's files are unreadable, incomplete, or the key does not match the certificate."""


@dataclass(frozen=True)
class KeyPair:
    """One slot's key pair as published and used; holds no private material."""

    slot: str
    key_path: Path
    cert_path: Path
    cert_pem: str  # PEM text of the certificate
    cert_b64: str  # base64 DER body, what SAML metadata's <ds:X509Certificate> wants
    fingerprint_sha256: str  # of the certificate DER, colon-separated upper-case hex
    not_after: dt.datetime
    key_size: int


# --- files, lock and journal -----------------------------------------------------------------


def key_dir() -> Path:
    return Path(settings.SAML_KEY_DIR)


def _paths(slot: str) -> tuple[Path, Path]:
    if slot not in SLOTS:
        raise ValidationError(f"unknown key slot {slot!r} (one of: {', '.join(SLOTS)})")
    return key_dir() / f"{slot}.key", key_dir() / f"{slot}.crt"


def _apply(changes: dict[str, bytes | None]) -> None:
    """Write (bytes) or delete (None) files of the key directory, in order; fsync the directory."""
    for name, data in changes.items():
        if data is None:
            (key_dir() / name).unlink(missing_ok=True)
        else:
            write_atomic(key_dir() / name, data, 0o600 if name.endswith(".key") else 0o644)
    fd = os.open(key_dir(), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Exclusive lock over the key directory (across processes); rolls back an interrupted change."""
    key_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(key_dir(), 0o700)
    fd = os.open(key_dir() / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        journal = key_dir() / _JOURNAL
        if journal.exists():
            undo = json.loads(journal.read_text())["undo"]
            logger.warning("keys: rolling back an interrupted key change in %s", key_dir())
            _apply({name: None if text is None else text.encode("latin-1") for name, text in undo.items()})
            journal.unlink()
        yield
    finally:
        os.close(fd)


def _commit(changes: dict[str, bytes | None], action: str, actor: str | None, **data) -> None:
    """Apply ``changes`` and audit ``action``, all or nothing. The caller holds the lock."""
    journal = key_dir() / _JOURNAL
    undo = {n: (key_dir() / n).read_bytes() if (key_dir() / n).exists() else None for n in changes}
    applied = False
    try:
        with transaction.atomic():
            audit.record(action, actor=actor, **data)
            text = {n: None if b is None else b.decode("latin-1") for n, b in undo.items()}
            write_atomic(journal, json.dumps({"undo": text}).encode(), 0o600)
            applied = True
            _apply(changes)
            journal.unlink()
    except BaseException:
        if applied:  # if this fails too, the journal stays and the next access rolls back
            _apply(undo)
            journal.unlink(missing_ok=True)
        raise


# --- reading ---------------------------------------------------------------------------------

_cache: dict[tuple[str, str], tuple[tuple, KeyPair]] = {}


def _spki(public_key) -> bytes:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return public_key.public_bytes(serialization.Encoding.DER, spki)


def _pair(slot: str, cert: x509.Certificate, key_size: int) -> KeyPair:
    key_path, cert_path = _paths(slot)
    return KeyPair(
        slot=slot, key_path=key_path, cert_path=cert_path,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        cert_b64=base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode(),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        not_after=cert.not_valid_after_utc, key_size=key_size,
    )


def _read(slot: str) -> KeyPair | None:
    key_path, cert_path = _paths(slot)
    try:
        ks, cs = key_path.stat(), cert_path.stat()
    except FileNotFoundError:
        if key_path.exists() or cert_path.exists():
            raise KeysInvalid(f"key slot {slot!r} is incomplete: {key_path.name} and "
                              f"{cert_path.name} must both exist") from None
        return None
    stamp = (ks.st_ino, ks.st_mtime_ns, ks.st_size, cs.st_ino, cs.st_mtime_ns, cs.st_size)
    cached = _cache.get((str(key_dir()), slot))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    if ks.st_mode & 0o077:
        logger.warning("keys: %s is open to group/others (mode %o); chmod 600 it", key_path,
                       ks.st_mode & 0o777)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise KeysInvalid(f"key slot {slot!r} cannot be read: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeysInvalid(f"key slot {slot!r} does not hold an RSA key")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise KeysInvalid(f"{cert_path} does not belong to the private key {key_path}")
    pair = _pair(slot, cert, key.key_size)
    _cache[(str(key_dir()), slot)] = (stamp, pair)
    return pair


def load(slot: str) -> KeyPair | None:
    """The key pair in ``slot``, or None when the slot is empty. Parsed once per file version."""
    _paths(slot)
    if not (key_dir() / _JOURNAL).exists():
        with contextlib.suppress(KeysInvalid):  # maybe a change is under way: wait for it below
            return _read(slot)
    try:
        with _locked():
            return _read(slot)
    except OSError as exc:  # cannot take the lock (read-only directory): report what is on disk
        logger.warning("keys: cannot lock %s: %s", key_dir(), exc)
        return _read(slot)


def load_private_key(pair: KeyPair) -> rsa.RSAPrivateKey:
    """The private key of ``pair`` (for in-process signing, e.g. OIDC private_key_jwt)."""
    key = serialization.load_pem_private_key(pair.key_path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeysInvalid(f"{pair.key_path} does not hold an RSA key")
    return key


def _require(slot: str, *, locked: bool = False) -> KeyPair:
    pair = _read(slot) if locked else load(slot)
    if pair is None:
        raise ValidationError(f"key slot {slot!r} is empty (see: manage.py keys list)")
    return pair


def current(*, auto_generate: bool | None = None) -> KeyPair:
    """The signing key pair. When missing, generate one if ``auto_generate`` (default: DEBUG or
    EMBEDDED, i.e. development and single-node set-ups), else raise KeysMissing."""
    pair = load("current")
    if pair is not None:
        return pair
    if not (settings.DEBUG or settings.EMBEDDED if auto_generate is None else auto_generate):
        raise KeysMissing()
    with _locked():
        pair = _read("current")  # another process may have been quicker
        if pair is None:
            pair = _create("current", settings.SAML_KEY_SIZE, None, DEFAULT_DAYS, "keys.generated",
                           context.current().actor or "system", via="auto")
            logger.warning("keys: generated SP key pair %s in %s", pair.fingerprint_sha256, key_dir())
    return pair


def published() -> list[KeyPair]:
    """Key pairs for our SP metadata: current, then next while a rotation is pending."""
    return [current(), *filter(None, [load("next")])]


def decryption_keys() -> list[KeyPair]:
    """Every key that may decrypt an incoming assertion: current, next, previous."""
    return [current(), *filter(None, [load("next"), load("previous")])]


# --- changes ---------------------------------------------------------------------------------


def _cn_of(pair: KeyPair) -> str | None:
    names = x509.load_pem_x509_certificate(pair.cert_pem.encode()).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _san(name: str) -> list[x509.GeneralName]:
    with contextlib.suppress(ValueError):
        return [x509.IPAddress(ipaddress.ip_address(name))]
    return [x509.DNSName(name)] if _HOSTNAME.match(name) else []


def _create(slot: str, size: int, common_name: str | None, days: int, action: str, actor: str | None,
            **data) -> KeyPair:
    """Generate an RSA key and a self-signed SHA-256 certificate into ``slot`` (lock held)."""
    if not MIN_KEY_SIZE <= size <= MAX_KEY_SIZE:
        raise ValidationError(f"RSA key size must be {MIN_KEY_SIZE} to {MAX_KEY_SIZE} bits, got {size}")
    if not 1 <= days <= 36500:
        raise ValidationError(f"validity must be 1 to 36500 days, got {days}")
    cn = common_name or urlsplit(settings.BASE_URL).hostname or "localhost"
    key = rsa.generate_private_key(public_exponent=65537, key_size=size)
    now = dt.datetime.now(dt.UTC)
    try:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if san := _san(cn):
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(key, hashes.SHA256())
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"cannot build the certificate: {exc}")
    pair = _pair(slot, cert, size)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _commit({f"{slot}.key": key_pem, f"{slot}.crt": pair.cert_pem.encode()}, action, actor,
            slot=slot, fingerprint_sha256=pair.fingerprint_sha256, key_size=size, common_name=cn,
            not_after=pair.not_after.isoformat(), **data)
    return _read(slot) or pair


def generate(*, size: int | None = None, common_name: str | None = None, days: int = DEFAULT_DAYS,
             force: bool = False, actor: str | None = None, via: str = "cli") -> KeyPair:
    """Create the ``current`` key pair (RSA ``size`` bits, default settings.SAML_KEY_SIZE) with a
    self-signed certificate valid ``days``. Refused if one exists, unless ``force`` (which breaks
    logins at IdPs until they reload our metadata: prefer ``rotate``)."""
    with _locked():
        old = _read("current")
        if old is not None and not force:
            raise ValidationError(
                f"a current key already exists ({old.fingerprint_sha256}); use --force to replace it, "
                "or `manage.py keys rotate` for a rotation without downtime")
        return _create("current", size or settings.SAML_KEY_SIZE, common_name, days, "keys.generated",
                       actor, via=via, replaced_fingerprint=old and old.fingerprint_sha256)


def csr(*, slot: str = "current", common_name: str | None = None, organization: str | None = None,
        country: str | None = None, email: str | None = None, actor: str | None = None,
        via: str = "cli") -> str:
    """A PEM certificate signing request (SHA-256) for ``slot``'s key, to send to a CA."""
    pair = _require(slot)
    cn = common_name or _cn_of(pair) or urlsplit(settings.BASE_URL).hostname or "localhost"
    if country is not None and not re.fullmatch(r"[A-Za-z]{2}", country):
        raise ValidationError(f"country must be a two-letter ISO 3166 code, got {country!r}")
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
        raise ValidationError(f"not an e-mail address: {email!r}")
    attrs = [(NameOID.COUNTRY_NAME, country and country.upper()), (NameOID.ORGANIZATION_NAME, organization),
             (NameOID.COMMON_NAME, cn), (NameOID.EMAIL_ADDRESS, email)]
    try:
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs if value]))
        if san := _san(cn):
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        request = builder.sign(load_private_key(pair), hashes.SHA256())
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"cannot build the CSR: {exc}")
    audit.record("keys.csr", actor=actor, via=via, slot=slot, fingerprint_sha256=pair.fingerprint_sha256,
                 subject=request.subject.rfc4514_string())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def import_certificate(cert_pem_path: str | os.PathLike, *, slot: str = "current", actor: str | None = None,
                       via: str = "cli") -> KeyPair:
    """Replace ``slot``'s certificate with a CA-issued one for the same key. The file may hold a
    PEM chain or one DER certificate; the certificate for our key is kept."""
    _paths(slot)
    try:
        data = Path(cert_pem_path).read_bytes()
        certs = (x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                 else [x509.load_der_x509_certificate(data)])
    except OSError as exc:
        raise ValidationError(f"cannot read {cert_pem_path}: {exc.strerror}")
    except ValueError as exc:
        raise ValidationError(f"{cert_pem_path} holds no readable X.509 certificate: {exc}")
    with _locked():
        old = _require(slot, locked=True)
        ours = _spki(load_private_key(old).public_key())
        cert = next((c for c in certs if _spki(c.public_key()) == ours), None)
        if cert is None:
            raise ValidationError(f"the certificate in {cert_pem_path} is not for the {slot} key (its "
                                  f"public key differs); was the CSR made with `keys csr --slot {slot}`?")
        if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
            raise ValidationError(f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        pair = _pair(slot, cert, old.key_size)
        _commit({f"{slot}.crt": pair.cert_pem.encode()}, "keys.certificate_imported", actor, via=via,
                slot=slot, fingerprint_sha256=pair.fingerprint_sha256,
                replaced_fingerprint=old.fingerprint_sha256, subject=cert.subject.rfc4514_string(),
                issuer=cert.issuer.rfc4514_string(), not_after=pair.not_after.isoformat())
    return pair


def rotate(*, activate: bool = False, retire: bool = False, size: int | None = None,
           actor: str | None = None, via: str = "cli") -> dict:
    """One stage of a rotation without downtime. No flag: create ``next`` (published, decrypts);
    ``activate``: previous <- current, current <- next; ``retire``: delete previous.
    Returns the stage and the fingerprint in each slot afterwards."""
    if activate and retire:
        raise ValidationError("choose one of --activate and --retire")
    if size is not None and (activate or retire):
        raise ValidationError("--size only applies when creating the next key")
    stage = "retire" if retire else "activate" if activate else "next"
    result: dict = {"stage": stage}
    with _locked():
        cur, nxt, prev = (_read(s) for s in SLOTS)
        fps = {f"{s}_fingerprint": p and p.fingerprint_sha256
               for s, p in zip(SLOTS, (cur, nxt, prev), strict=True)}
        if stage == "next":
            if cur is None:
                raise ValidationError("there is no current key; run `manage.py keys generate` first")
            if nxt is not None:
                raise ValidationError(f"a next key already exists ({nxt.fingerprint_sha256}); once every "
                                      "IdP has it, run `manage.py keys rotate --activate`")
            _create("next", size or settings.SAML_KEY_SIZE, _cn_of(cur), DEFAULT_DAYS, "keys.rotated", actor,
                    via=via, stage=stage, current_fingerprint=cur.fingerprint_sha256)
        elif stage == "activate":
            if nxt is None:
                raise ValidationError("there is no next key to activate; run `manage.py keys rotate` first "
                                      "and wait until every IdP has refreshed our metadata")
            if prev is not None:
                raise ValidationError(f"the previous key {prev.fingerprint_sha256} is still kept; "
                                      "run `manage.py keys rotate --retire` first")
            moves = [("current", "previous")] if cur else []
            changes: dict[str, bytes | None] = {
                f"{dst}.{ext}": (key_dir() / f"{src}.{ext}").read_bytes()
                for src, dst in [*moves, ("next", "current")] for ext in ("key", "crt")}
            result["next_age_seconds"] = int(time.time() - nxt.key_path.stat().st_mtime)
            _commit({**changes, "next.key": None, "next.crt": None}, "keys.rotated", actor, via=via,
                    stage=stage, **fps)
        else:
            if prev is None:
                raise ValidationError("there is no previous key to retire")
            _commit({"previous.key": None, "previous.crt": None}, "keys.rotated", actor, via=via,
                    stage=stage, retired_fingerprint=prev.fingerprint_sha256, **fps)
            result["retired"] = prev.fingerprint_sha256
        for slot in SLOTS:
            pair = _read(slot)
            result[slot] = pair and pair.fingerprint_sha256
    return result
