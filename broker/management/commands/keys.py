"""manage.py keys generate|csr|import-cert|rotate|list|show"""

from __future__ import annotations

import argparse
import datetime as dt
import textwrap
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, DjangoHelpFormatter

from broker import keys
from broker.management.base import SubcommandCommand

EXPIRY_WARNING_DAYS = 30
ROLES = {"current": "signs, decrypts", "next": "published, decrypts", "previous": "decrypts only"}
ROTATION = """\
Rotation without downtime:
  1) keys rotate             create the next key; our SP metadata now publishes it too
  2) wait until every IdP has refreshed our metadata (or re-import it there by hand:
     ADFS, Entra and many Okta set-ups do not poll metadata)
  3) keys rotate --activate  next becomes current (signs); the old one becomes previous
  4) later, once in-flight encrypted assertions are gone: keys rotate --retire
"""


def _para(text: str) -> str:
    return textwrap.fill(text, 78)


class _Formatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions (the rotation steps)."""


class Command(SubcommandCommand):
    help = _para("Manage the SP's key pairs (SAML signing and decryption) in SAML_KEY_DIR. Slots: "
                 "current (signs, decrypts), next (published ahead of a rotation, decrypts), previous "
                 "(decrypts until retired). Every change is audited.") + "\n\n" + ROTATION

    def create_parser(self, prog_name, subcommand, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_subcommands(self, subparsers) -> None:
        raw = {"formatter_class": _Formatter}
        gen = subparsers.add_parser(
            "generate", help="Create the current key pair with a self-signed certificate.", **raw,
            description=_para("Create the current key pair: RSA (default SAML_KEY_SIZE bits) and a "
                              "self-signed SHA-256 certificate. Refused if one exists: --force replaces "
                              "it at once, which breaks logins at every IdP until it reloads our "
                              "metadata.") + "\n\n" + ROTATION)
        gen.add_argument("--size", type=int, help="RSA key size in bits (default: SAML_KEY_SIZE, 4096).")
        gen.add_argument("--cn", help="Certificate subject CN (default: the host of BASE_URL).")
        gen.add_argument("--days", type=int, default=keys.DEFAULT_DAYS,
                         help="Certificate validity in days (default: %(default)s, like Shibboleth).")
        gen.add_argument("--force", action="store_true", help="Replace an existing current key pair.")

        req = subparsers.add_parser(
            "csr", help="Print a certificate signing request for a slot's key.", **raw,
            description=_para("Print (or write) a PEM CSR for a slot's key, for a CA-issued "
                              "certificate. Then: keys import-cert SIGNED.crt --slot SLOT. Tip: rather "
                              "than replacing the current certificate, run `keys rotate` and get --slot "
                              "next signed: IdPs that pin our certificate see a new one only when they "
                              "refresh our metadata."))
        req.add_argument("--slot", choices=keys.SLOTS, default="current")
        req.add_argument("--cn", help="Subject CN (default: the CN of the slot's certificate).")
        req.add_argument("--org", help="Subject O (organization).")
        req.add_argument("--country", help="Subject C (two-letter ISO code).")
        req.add_argument("--email", help="Subject emailAddress.")
        req.add_argument("-o", "--output", help="Write the CSR to this file instead of stdout.")

        imp = subparsers.add_parser(
            "import-cert", help="Replace a slot's self-signed certificate by a CA-issued one.",
            description="Install a CA-issued certificate (PEM, may be a chain; or DER) for the key "
                        "already in the slot. Refused unless its public key is the slot's key.")
        imp.add_argument("file", help="The certificate file.")
        imp.add_argument("--slot", choices=keys.SLOTS, default="current")

        rot = subparsers.add_parser(
            "rotate", help="Rotate the key pair without downtime (see the steps).", **raw,
            description="Without a flag: create the next key pair (refused if one exists).\n\n" + ROTATION)
        stage = rot.add_mutually_exclusive_group()
        stage.add_argument("--activate", action="store_true",
                           help="Step 3: previous <- current, current <- next.")
        stage.add_argument("--retire", action="store_true", help="Step 4: delete the previous key.")
        rot.add_argument("--size", type=int, help="RSA bits of the next key (default: SAML_KEY_SIZE).")

        lst = subparsers.add_parser("list", help="List the slots with fingerprint, size and expiry.")
        lst.add_argument("--json", action="store_true", help="Machine-readable output.")

        show = subparsers.add_parser("show", help="Print a slot's certificate (PEM).")
        show.add_argument("--slot", choices=keys.SLOTS, default="current")

    def handle(self, *args, **options) -> None:
        try:
            super().handle(*args, **options)
        except keys.KeysError as exc:  # a broken key store: not a refusal
            raise CommandError(str(exc)) from exc

    def _describe(self, pair: keys.KeyPair) -> str:
        return (f"slot {pair.slot}: RSA-{pair.key_size}, SHA-256 fingerprint {pair.fingerprint_sha256}, "
                f"valid until {pair.not_after:%Y-%m-%d}")

    def handle_generate(self, *, actor: str, size: int | None, cn: str | None, days: int, force: bool,
                        **_) -> None:
        pair = keys.generate(size=size, common_name=cn, days=days, force=force, actor=actor)
        self.stdout.write(self.style.SUCCESS(f"Generated {self._describe(pair)}."))
        self.stdout.write(f"Key: {pair.key_path} (0600)\nCertificate: {pair.cert_path}")
        if force:
            self.stderr.write(self.style.WARNING(
                "The current key was replaced: every IdP must reload our SP metadata now."))

    def handle_csr(self, *, actor: str, slot: str, cn: str | None, org: str | None, country: str | None,
                   email: str | None, output: str | None, **_) -> None:
        pem = keys.csr(slot=slot, common_name=cn, organization=org, country=country, email=email,
                       actor=actor)
        hint = f"Once the CA has signed it: manage.py keys import-cert SIGNED.crt --slot {slot}"
        if output:
            Path(output).write_text(pem)
            self.stdout.write(self.style.SUCCESS(f"CSR for the {slot} key written to {output}."))
            self.stdout.write(hint)
        else:
            self.stdout.write(pem, ending="")
            self.stderr.write(hint)

    def handle_import_cert(self, *, actor: str, file: str, slot: str, **_) -> None:
        pair = keys.import_certificate(file, slot=slot, actor=actor)
        self.stdout.write(self.style.SUCCESS(f"Certificate imported: {self._describe(pair)}."))
        if slot == "current":
            self.stderr.write(self.style.WARNING(
                "Our SP metadata now carries the new certificate: IdPs that pin certificates "
                "must reload it."))

    def handle_rotate(self, *, actor: str, activate: bool, retire: bool, size: int | None, **_) -> None:
        result = keys.rotate(activate=activate, retire=retire, size=size, actor=actor)
        if result["stage"] == "next":
            self.stdout.write(self.style.SUCCESS(f"Next key {result['next']} created and published in "
                                                 "our SP metadata."))
            self.stdout.write("Now wait until every IdP has refreshed our metadata, then run: "
                              "manage.py keys rotate --activate")
        elif result["stage"] == "activate":
            self.stdout.write(self.style.SUCCESS(f"Key {result['current']} is now current (signs)."))
            if result["previous"]:
                self.stdout.write(f"The old key {result['previous']} is kept as previous (decrypts only). "
                                  "Later run: manage.py keys rotate --retire")
            if result.get("next_age_seconds", 0) < 86400:
                self.stderr.write(self.style.WARNING(
                    f"The next key was published only {result['next_age_seconds'] // 60} minute(s) ago: "
                    "IdPs that have not refreshed our metadata will reject our signed requests."))
        else:
            self.stdout.write(self.style.SUCCESS(f"Previous key {result['retired']} retired (deleted)."))

    def handle_list(self, *, json: bool, **_) -> None:
        now = dt.datetime.now(dt.UTC)
        rows, warnings = [], []
        for slot in keys.SLOTS:
            try:
                pair = keys.load(slot)
            except keys.KeysInvalid as exc:
                rows.append({"slot": slot, "role": ROLES[slot], "error": str(exc)})
                warnings.append(str(exc))
                continue
            if pair is None:
                rows.append({"slot": slot, "role": ROLES[slot], "empty": True})
                continue
            days = (pair.not_after - now).days
            rows.append({"slot": slot, "role": ROLES[slot], "fingerprint_sha256": pair.fingerprint_sha256,
                         "key_size": pair.key_size, "not_after": pair.not_after.isoformat(),
                         "days_left": days})
            if pair.not_after <= now:
                warnings.append(f"The {slot} certificate EXPIRED on {pair.not_after:%Y-%m-%d}.")
            elif days < EXPIRY_WARNING_DAYS:
                warnings.append(f"The {slot} certificate expires in {days} day(s), on "
                                f"{pair.not_after:%Y-%m-%d}: rotate now (manage.py keys rotate).")
            if pair.key_path.stat().st_mode & 0o077:
                warnings.append(f"{pair.key_path} is readable by group/others: chmod 600 it.")
        if json:
            self.print_json(rows)
        else:
            self.stdout.write(self.table(
                [[r["slot"], r["role"], r.get("fingerprint_sha256", "-" if "empty" in r else "INVALID"),
                  r.get("key_size", "-"), r["not_after"][:10] if "not_after" in r else "-"] for r in rows],
                ["SLOT", "ROLE", "SHA-256 FINGERPRINT", "BITS", "NOT AFTER"],
            ))
            if all(r.get("empty") for r in rows):
                self.stdout.write("No keys. Create them with: manage.py keys generate")
        for warning in warnings:
            self.stderr.write(self.style.WARNING(f"WARNING: {warning}"))

    def handle_show(self, *, slot: str, **_) -> None:
        pair = keys.load(slot)
        if pair is None:
            raise ValidationError(f"key slot {slot!r} is empty (see: manage.py keys list)")
        self.stdout.write(pair.cert_pem, ending="")
