"""The SP key store (broker.keys) and ``manage.py keys``: files and modes, certificates, CSRs,
the rotation stages, refusals with exit code 2, and audit events free of private material."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import stat
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from broker import keys
from broker.models import AuditEvent

BITS = 2048  # fast; the default (4096) is covered by test_default_key_size_is_rsa_4096


@pytest.fixture
def keydir(settings, tmp_path, db):
    settings.SAML_KEY_DIR = tmp_path / "saml"
    settings.SAML_KEY_SIZE = BITS
    return settings.SAML_KEY_DIR


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("keys", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as info:
        run(*args)
    assert info.value.returncode == 2, f"expected exit code 2, got {info.value.returncode}"
    return str(info.value)


def events(action: str) -> list[AuditEvent]:
    found = list(AuditEvent.objects.filter(action=action).order_by("id"))
    for event in found:  # never any private material in the audit log
        dumped = json.dumps(event.data)
        assert "PRIVATE" not in dumped and "BEGIN" not in dumped, dumped
    return found


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def private_key(pair: keys.KeyPair) -> rsa.RSAPrivateKey:
    return serialization.load_pem_private_key(pair.key_path.read_bytes(), password=None)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fingerprints(pairs) -> list[str]:
    return [p.fingerprint_sha256 for p in pairs]


# --- generate --------------------------------------------------------------------------------


def test_generate_writes_private_key_0600_in_0700_dir_with_matching_cert(keydir, settings):
    pair = keys.generate(size=BITS, actor="test")

    assert pair.key_path == keydir / "current.key" and pair.cert_path == keydir / "current.crt"
    assert mode(keydir) == 0o700
    assert mode(pair.key_path) == 0o600
    assert b"BEGIN PRIVATE KEY" in pair.key_path.read_bytes()  # PKCS#8, unencrypted
    assert sorted(p.name for p in keydir.iterdir() if p.name != ".lock") == [
        "current.crt", "current.key"]  # no temp file or journal left behind

    cert = x509.load_pem_x509_certificate(pair.cert_path.read_bytes())
    assert spki(cert.public_key()) == spki(private_key(pair).public_key())
    assert cert.subject == cert.issuer  # self-signed
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == urlsplit(settings.BASE_URL).hostname
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=3649) < lifetime <= dt.timedelta(days=3650)

    assert pair.key_size == BITS
    assert pair.not_after == cert.not_valid_after_utc
    assert pair.cert_pem == cert.public_bytes(serialization.Encoding.PEM).decode()
    assert x509.load_der_x509_certificate(base64.b64decode(pair.cert_b64)) == cert
    assert pair.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()

    [event] = events("keys.generated")
    assert event.actor == "test"
    assert event.data["slot"] == "current"
    assert event.data["fingerprint_sha256"] == pair.fingerprint_sha256
    assert event.data["key_size"] == BITS
    assert event.data["not_after"] == pair.not_after.isoformat()


def test_default_key_size_is_rsa_4096(settings, tmp_path, db):
    settings.SAML_KEY_DIR = tmp_path / "saml"
    assert settings.SAML_KEY_SIZE == 4096
    pair = keys.generate()
    assert pair.key_size == 4096
    assert private_key(pair).key_size == 4096


def test_generate_options_and_refusal_to_overwrite_without_force(keydir):
    out, _ = run("generate", "--size", str(BITS), "--cn", "sp.example.org", "--days", "30")
    first = keys.load("current")
    assert first.fingerprint_sha256 in out
    cert = x509.load_pem_x509_certificate(first.cert_pem.encode())
    assert cert.subject.rfc4514_string() == "CN=sp.example.org"
    assert (first.not_after - dt.datetime.now(dt.UTC)).days in (29, 30)

    message = refused("generate", "--size", str(BITS))
    assert "--force" in message and first.fingerprint_sha256 in message
    assert keys.load("current") == first

    _, err = run("generate", "--size", str(BITS), "--force")
    second = keys.load("current")
    assert second.fingerprint_sha256 != first.fingerprint_sha256
    assert "reload our SP metadata" in err
    assert [e.data["replaced_fingerprint"] for e in events("keys.generated")] == [
        None, first.fingerprint_sha256]


@pytest.mark.parametrize("args", [["--size", "1024"], ["--days", "0"], ["--cn", "x" * 65]])
def test_generate_refuses_weak_or_bad_parameters(keydir, args):
    refused("generate", *args)
    assert keys.load("current") is None
    assert not events("keys.generated")


# --- current / published / decryption_keys ---------------------------------------------------


def test_current_without_keys_raises_keys_missing(keydir, settings):
    settings.DEBUG = settings.EMBEDDED = False
    with pytest.raises(keys.KeysMissing, match=r"python manage.py keys generate"):
        keys.current(auto_generate=False)
    with pytest.raises(keys.KeysMissing):
        keys.current()  # production default: never generate on the fly
    with pytest.raises(keys.KeysMissing):
        keys.published()
    assert keys.load("current") is None
    assert not events("keys.generated")


def test_current_auto_generates_when_allowed(keydir, settings):
    settings.DEBUG, settings.EMBEDDED = True, False
    pair = keys.current()
    assert pair.key_size == BITS and mode(pair.key_path) == 0o600
    assert keys.current() is pair  # cached, not generated again
    [event] = events("keys.generated")
    assert event.data["via"] == "auto" and event.data["fingerprint_sha256"] == pair.fingerprint_sha256


def test_load_is_cached_until_the_files_change(keydir):
    pair = keys.generate(size=BITS)
    assert keys.load("current") is keys.load("current") == pair
    keys.generate(size=BITS, force=True)
    assert keys.load("current").fingerprint_sha256 != pair.fingerprint_sha256


# --- csr and import-cert ---------------------------------------------------------------------


def test_csr_is_signed_by_the_slot_key(keydir, tmp_path, settings):
    pair = keys.generate(size=BITS)
    pem = keys.csr(common_name="sp.example.org", organization="Example AG", country="de",
                   email="ops@example.org", actor="test")
    request = x509.load_pem_x509_csr(pem.encode())
    assert request.is_signature_valid
    assert spki(request.public_key()) == spki(private_key(pair).public_key())
    assert isinstance(request.signature_hash_algorithm, hashes.SHA256)
    assert request.subject.rfc4514_string() == (
        "1.2.840.113549.1.9.1=ops@example.org,CN=sp.example.org,O=Example AG,C=DE")
    [event] = events("keys.csr")
    assert event.data["fingerprint_sha256"] == pair.fingerprint_sha256

    out_file = tmp_path / "sp.csr"
    out, _ = run("csr", "--country", "DE", "-o", str(out_file))
    assert str(out_file) in out and "import-cert" in out
    from_file = x509.load_pem_x509_csr(out_file.read_bytes())
    assert from_file.is_signature_valid
    assert from_file.subject.rfc4514_string() == f"CN={urlsplit(settings.BASE_URL).hostname},C=DE"

    assert "two-letter" in refused("csr", "--country", "Germany")
    assert "empty" in refused("csr", "--slot", "next")


def ca_signed(csr_pem: str, *, days: int = 365) -> bytes:
    """A tiny CA issuing a certificate for ``csr_pem``; returns the PEM chain (leaf, CA)."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=BITS)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    request = x509.load_pem_x509_csr(csr_pem.encode())
    leaf = (x509.CertificateBuilder().subject_name(request.subject).issuer_name(ca_name)
            .public_key(request.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=max(0, -2 * days)))
            .not_valid_after(now + dt.timedelta(days=days)).sign(ca_key, hashes.SHA256()))
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca))


def test_import_cert_installs_a_ca_issued_certificate_for_the_same_key(keydir, tmp_path):
    pair = keys.generate(size=BITS)
    chain = tmp_path / "signed.pem"
    chain.write_bytes(ca_signed(keys.csr()))
    out, _ = run("import-cert", str(chain))
    new = keys.load("current")
    assert new.fingerprint_sha256 != pair.fingerprint_sha256 and new.fingerprint_sha256 in out
    assert x509.load_pem_x509_certificate(new.cert_pem.encode()).issuer.rfc4514_string() == "CN=Test CA"
    assert new.cert_pem.count("BEGIN CERTIFICATE") == 1  # only our certificate, not the CA's
    assert new.key_path.read_bytes() == pair.key_path.read_bytes()
    [event] = events("keys.certificate_imported")
    assert event.data["replaced_fingerprint"] == pair.fingerprint_sha256
    assert event.data["issuer"] == "CN=Test CA"


def test_import_cert_for_another_key_or_expired_is_refused(keydir, tmp_path):
    pair = keys.generate(size=BITS)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=BITS)
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sso.test")]))
               .sign(other_key, hashes.SHA256()))
    foreign = tmp_path / "foreign.pem"
    foreign.write_bytes(ca_signed(request.public_bytes(serialization.Encoding.PEM).decode()))

    assert "not for the current key" in refused("import-cert", str(foreign))
    expired = tmp_path / "expired.pem"
    expired.write_bytes(ca_signed(keys.csr(), days=-1))
    assert "expired" in refused("import-cert", str(expired))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    refused("import-cert", str(garbage))
    refused("import-cert", str(tmp_path / "missing.pem"))

    assert keys.load("current") == pair
    assert not events("keys.certificate_imported")


# --- rotation --------------------------------------------------------------------------------


def test_rotation_publishes_activates_and_retires(keydir):
    old = keys.generate(size=BITS)
    assert fingerprints(keys.published()) == [old.fingerprint_sha256]

    out, _ = run("rotate")
    new = keys.load("next")
    assert new is not None and new.fingerprint_sha256 in out and mode(new.key_path) == 0o600
    assert fingerprints(keys.published()) == [old.fingerprint_sha256, new.fingerprint_sha256]
    assert fingerprints(keys.decryption_keys()) == [old.fingerprint_sha256, new.fingerprint_sha256]
    assert keys.current() == old  # still signs with the old key
    assert "already exists" in refused("rotate")

    old_key = old.key_path.read_bytes()
    out, err = run("rotate", "--activate")
    assert "minute(s) ago" in err  # published moments ago: a warning, not a refusal
    assert keys.current().fingerprint_sha256 == new.fingerprint_sha256
    assert keys.load("next") is None
    assert keys.load("previous").fingerprint_sha256 == old.fingerprint_sha256
    assert (keydir / "previous.key").read_bytes() == old_key
    assert mode(keydir / "previous.key") == 0o600
    assert fingerprints(keys.published()) == [new.fingerprint_sha256]
    assert fingerprints(keys.decryption_keys()) == [new.fingerprint_sha256, old.fingerprint_sha256]

    run("rotate")  # a following rotation can be published, but not activated before retiring
    assert "--retire" in refused("rotate", "--activate")
    third = keys.load("next")

    out, _ = run("rotate", "--retire")
    assert old.fingerprint_sha256 in out
    assert keys.load("previous") is None
    assert not (keydir / "previous.key").exists() and not (keydir / "previous.crt").exists()
    assert fingerprints(keys.decryption_keys()) == [new.fingerprint_sha256, third.fingerprint_sha256]

    stages = [(e.data["stage"], e.data["current_fingerprint"]) for e in events("keys.rotated")]
    assert stages == [("next", old.fingerprint_sha256), ("activate", old.fingerprint_sha256),
                      ("next", new.fingerprint_sha256), ("retire", new.fingerprint_sha256)]


def test_rotation_refusals(keydir):
    assert "keys generate" in refused("rotate")  # nothing to rotate from
    keys.generate(size=BITS)
    assert "no next key" in refused("rotate", "--activate")
    assert "no previous key" in refused("rotate", "--retire")
    with pytest.raises(CommandError, match="not allowed"):  # argparse: exit 2 from the shell
        run("rotate", "--activate", "--retire")
    with pytest.raises(ValidationError, match="--size"):
        keys.rotate(activate=True, size=BITS)
    assert not events("keys.rotated")


def test_failed_activation_never_leaves_a_broken_current(keydir, monkeypatch):
    """The disk fills up half-way through an activation (after current.key was replaced) and the
    in-process undo fails too: the next reader rolls the journal back to the state before."""
    old = keys.generate(size=BITS)
    new = keys.rotate()["next"]
    before = {p.name: p.read_bytes() for p in keydir.iterdir() if not p.name.startswith(".")}
    real_write, calls = keys.write_atomic, []

    def full_disk(path, data, mode):
        calls.append(path.name)
        if len(calls) >= 5:  # journal, previous.key, previous.crt, current.key, then current.crt
            raise OSError(28, "No space left on device")
        real_write(path, data, mode)

    monkeypatch.setattr(keys, "write_atomic", full_disk)
    with pytest.raises(OSError, match="No space"):
        keys.rotate(activate=True)
    assert calls[:5] == [".journal.json", "previous.key", "previous.crt", "current.key", "current.crt"]
    assert (keydir / ".journal.json").exists()
    monkeypatch.setattr(keys, "write_atomic", real_write)

    assert keys.current().fingerprint_sha256 == old.fingerprint_sha256
    assert keys.load("next").fingerprint_sha256 == new and keys.load("previous") is None
    assert {p.name: p.read_bytes() for p in keydir.iterdir() if not p.name.startswith(".")} == before
    assert not (keydir / ".journal.json").exists()
    assert [e.data["stage"] for e in events("keys.rotated")] == ["next"]  # no audit, no action


# --- list and show ---------------------------------------------------------------------------


def test_list_and_show(keydir):
    out, _ = run("list")
    assert "keys generate" in out
    pair = keys.generate(size=BITS, days=10)
    out, err = run("list")
    assert pair.fingerprint_sha256 in out and str(BITS) in out
    assert "current certificate expires in" in err
    [row, *_] = json.loads(run("list", "--json")[0])
    assert row["fingerprint_sha256"] == pair.fingerprint_sha256 and row["days_left"] in (9, 10)

    assert run("show")[0] == pair.cert_pem
    assert "empty" in refused("show", "--slot", "previous")
