"""manage.py idp list|show|enable|disable|remove  (add-saml / add-oidc come with the adapters)"""

from __future__ import annotations

import json as jsonlib
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from broker.management.base import EXIT_REFUSED, SubcommandCommand
from broker.models import IdentityProvider
from broker.services import idps as service


class Command(SubcommandCommand):
    help = "Manage identity providers. Every change is audited."

    def add_subcommands(self, subparsers) -> None:
        saml = subparsers.add_parser(
            "add-saml", help="Register a SAML 2.0 IdP from its metadata.",
            description="Example: idp add-saml corp --metadata-url "
                        "https://adfs.corp.example/FederationMetadata/2007-06/FederationMetadata.xml",
        )
        saml.add_argument("slug")
        source = saml.add_mutually_exclusive_group(required=True)
        source.add_argument("--metadata-url", help="Fetched now and by `idp refresh`.")
        source.add_argument("--metadata-file", help="A metadata XML file (no automatic refresh).")
        saml.add_argument("--name", default="", help="Display name on the IdP picker.")
        saml.add_argument("--entity-id", help="Pick this IdP out of an aggregate.")
        saml.add_argument("--metadata-signing-cert",
                          help="PEM file: the metadata must be signed with it (unsigned copies refused).")
        saml.add_argument("--sp-entity-id",
                          help="Our entity ID towards this IdP (legacy IdPs that pinned one).")
        saml.add_argument("--subject-attribute", default="",
                          help="Canonical attribute holding the subject (e.g. eppn) instead of the NameID.")
        saml.add_argument("--attribute-map", default="{}",
                          help='JSON: IdP attribute name -> canonical name, e.g. {"department": "groups"}.')
        saml.add_argument("--allow-unsolicited", action="store_true",
                          help="Accept IdP-initiated logins (still replay-checked).")
        saml.add_argument("--post-binding", action="store_true",
                          help="Send the AuthnRequest with HTTP-POST instead of HTTP-Redirect.")
        saml.add_argument("--legacy-crypto", action="store_true",
                          help="Accept SHA-1 / RSA-1_5 / 3DES from this IdP (warned and audited).")
        saml.add_argument("--no-jit", action="store_true", help="Do not create users at first login.")
        saml.add_argument("--clock-skew", type=int, default=None,
                          help="Seconds (default CLOCK_SKEW_SECONDS).")
        saml.add_argument("--disabled", action="store_true", help="Register without enabling logins.")
        oidc = subparsers.add_parser(
            "add-oidc", help="Register an OpenID Provider (discovery is fetched and checked now).",
            description="Example: idp add-oidc keycloak --issuer https://kc.example/realms/corp "
                        "--client-id api_management_portal_01 --client-secret-env KC_SECRET",
        )
        oidc.add_argument("slug")
        oidc.add_argument("--issuer", required=True, help="Exactly as the provider's discovery names it.")
        oidc.add_argument("--client-id", required=True)
        secret = oidc.add_mutually_exclusive_group(required=True)
        secret.add_argument("--client-secret-env", help="Environment variable holding the secret.")
        secret.add_argument("--client-secret-file", help="File (mode 0600) holding the secret.")
        secret.add_argument("--private-key-file",
                            help="PEM private key (0600) for private_key_jwt client authentication.")
        oidc.add_argument("--scopes", default="openid profile email")
        oidc.add_argument("--auth-method", default=None,
                          choices=["client_secret_post", "client_secret_basic", "private_key_jwt"],
                          help="Default client_secret_post (private_key_jwt with --private-key-file).")
        oidc.add_argument("--algorithms", default="RS256,PS256,ES256",
                          help="ID token algorithms accepted (HS* only if listed; never none).")
        oidc.add_argument("--name", default="")
        oidc.add_argument("--attribute-map", default="{}", help="JSON: claim name -> canonical name.")
        oidc.add_argument("--ca-file", default="", help="CA bundle for the back channel.")
        oidc.add_argument("--mtls-cert-file", default="", help="Client certificate for mTLS.")
        oidc.add_argument("--mtls-key-file", default="", help="Client key for mTLS.")
        oidc.add_argument("--no-userinfo", action="store_true", help="Use ID token claims only.")
        oidc.add_argument("--no-jit", action="store_true")
        oidc.add_argument("--clock-skew", type=int, default=None)
        oidc.add_argument("--disabled", action="store_true")
        rot = subparsers.add_parser(
            "rotate-secret", help="Rotate an OIDC client secret without downtime.",
            description="1) create a second secret at the provider; 2) idp rotate-secret SLUG "
                        "--secondary-env NEW (the broker retries with it on invalid_client); "
                        "3) idp rotate-secret SLUG --promote (new becomes primary); 4) revoke the old "
                        "one at the provider.",
        )
        rot.add_argument("slug")
        action = rot.add_mutually_exclusive_group(required=True)
        action.add_argument("--secondary-env", help="Set the secondary secret from this variable.")
        action.add_argument("--secondary-file", help="Set the secondary secret from this file (0600).")
        action.add_argument("--promote", action="store_true", help="Secondary becomes primary.")
        action.add_argument("--retire", action="store_true", help="Forget the secondary secret.")
        ref = subparsers.add_parser(
            "refresh", help="Fetch SAML metadata again (keeps the last-known-good copy on failure).",
            description="Run from cron or a systemd timer: `idp refresh --all`.",
        )
        target = ref.add_mutually_exclusive_group(required=True)
        target.add_argument("slug", nargs="?")
        target.add_argument("--all", action="store_true", help="Every SAML IdP with a metadata URL.")
        lst = subparsers.add_parser("list", help="List IdPs with status.")
        lst.add_argument("--json", action="store_true")
        show = subparsers.add_parser("show", help="Show one IdP's configuration (secrets redacted).")
        show.add_argument("slug")
        for name, text in (("enable", "Allow logins through the IdP."),
                           ("disable", "Refuse logins through the IdP (nothing is deleted).")):
            p = subparsers.add_parser(name, help=text)
            p.add_argument("slug")
        rm = subparsers.add_parser("remove", help="Remove an IdP and its IdP-specific mappings.")
        rm.add_argument("slug")
        rm.add_argument("--force", action="store_true",
                        help="Also unlink its federated identities (local users stay).")

    def handle_add_saml(self, *, actor: str, slug: str, metadata_url: str | None,
                        metadata_file: str | None, name: str, entity_id: str | None,
                        metadata_signing_cert: str | None, sp_entity_id: str | None,
                        subject_attribute: str, attribute_map: str, allow_unsolicited: bool,
                        post_binding: bool, legacy_crypto: bool, no_jit: bool, clock_skew: int | None,
                        disabled: bool, **_) -> None:
        from broker.protocols.saml.metadata import MetadataError, register

        try:
            amap = jsonlib.loads(attribute_map)
        except ValueError as exc:
            raise CommandError(f"--attribute-map is not JSON: {exc}", returncode=EXIT_REFUSED) from exc
        options = {"allow_unsolicited": allow_unsolicited,
                   "authn_binding": "post" if post_binding else "redirect"}
        if sp_entity_id:
            options["sp_entity_id"] = sp_entity_id
        try:
            idp = register(
                slug, name=name, metadata_url=metadata_url,
                metadata_xml=Path(metadata_file).read_bytes() if metadata_file else None,
                entity_id=entity_id,
                signing_cert_pem=Path(metadata_signing_cert).read_text() if metadata_signing_cert else None,
                options=options, legacy_crypto=legacy_crypto, jit_allowed=not no_jit,
                subject_source=subject_attribute, clock_skew_seconds=clock_skew, attribute_map=amap,
                enabled=not disabled, actor=actor,
            )
        except MetadataError as exc:
            raise CommandError(f"metadata refused: {exc}", returncode=EXIT_REFUSED) from exc
        except OSError as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from exc
        if legacy_crypto:
            self.stderr.write(self.style.WARNING(
                f"WARNING: {slug} accepts SHA-1/RSA-1_5/3DES (legacy crypto). This is audited."))
        self.stdout.write(self.style.SUCCESS(
            f"SAML IdP {slug} registered ({idp.config['entity_id']}).\n"
            f"Give the IdP our metadata: {settings.BASE_URL}/sso/{slug}/saml/metadata/"))

    def handle_add_oidc(self, *, actor: str, slug: str, issuer: str, client_id: str,
                        client_secret_env: str | None, client_secret_file: str | None,
                        private_key_file: str | None, scopes: str, auth_method: str | None,
                        algorithms: str, name: str, attribute_map: str, ca_file: str,
                        mtls_cert_file: str, mtls_key_file: str, no_userinfo: bool, no_jit: bool,
                        clock_skew: int | None, disabled: bool, **_) -> None:
        from broker.errors import LoginError
        from broker.protocols.oidc.discovery import register

        try:
            amap = jsonlib.loads(attribute_map)
        except ValueError as exc:
            raise CommandError(f"--attribute-map is not JSON: {exc}", returncode=EXIT_REFUSED) from exc
        method = auth_method or ("private_key_jwt" if private_key_file else "client_secret_post")
        options = {"ca_file": ca_file, "mtls_cert_file": mtls_cert_file, "mtls_key_file": mtls_key_file,
                   "userinfo": not no_userinfo}
        try:
            idp = register(
                slug, issuer=issuer, client_id=client_id, name=name,
                client_secret_env=client_secret_env or "", client_secret_file=client_secret_file or "",
                private_key_file=private_key_file or "", scopes=scopes, auth_method=method,
                algorithms=[a.strip() for a in algorithms.split(",") if a.strip()], options=options,
                jit_allowed=not no_jit, clock_skew_seconds=clock_skew, attribute_map=amap,
                enabled=not disabled, actor=actor,
            )
        except LoginError as exc:
            raise CommandError(f"provider refused: {exc.code}: {exc.detail}",
                               returncode=EXIT_REFUSED) from exc
        self.stdout.write(self.style.SUCCESS(
            f"OpenID Provider {idp.slug} registered.\n"
            f"Redirect URI to register at the provider: {settings.BASE_URL}/sso/{slug}/oidc/callback/\n"
            f"Back-channel logout URI: {settings.BASE_URL}/sso/{slug}/oidc/backchannel-logout/\n"
            f"Post-logout redirect URI: {settings.BASE_URL}/sso/"))

    def handle_rotate_secret(self, *, actor: str, slug: str, secondary_env: str | None,
                             secondary_file: str | None, promote: bool, retire: bool, **_) -> None:
        from broker.protocols.oidc.rotation import rotate

        message = rotate(service.get_idp(slug), secondary_env=secondary_env or "",
                         secondary_file=secondary_file or "", promote=promote, retire=retire, actor=actor)
        self.stdout.write(self.style.SUCCESS(message))

    def handle_refresh(self, *, actor: str, slug: str | None, all: bool, **_) -> None:
        from broker.protocols.oidc.discovery import refresh as refresh_oidc
        from broker.protocols.saml.metadata import refresh as refresh_saml

        if all:
            idps = list(IdentityProvider.objects.exclude(protocol="saml", config__metadata_url=""))
        else:
            idps = [service.get_idp(slug or "")]
        failures = 0
        for idp in idps:
            if idp.protocol == "oidc":
                outcome = refresh_oidc(idp, actor=actor)
                if outcome.get("error"):
                    failures += 1
                    self.stderr.write(f"{idp.slug}: kept the last-known-good copy: {outcome['error']}")
                else:
                    self.stdout.write(f"{idp.slug}: discovery/JWKS refreshed "
                                      f"{jsonlib.dumps(outcome['changes']) if outcome['changes'] else ''}")
                continue
            result = refresh_saml(idp, actor=actor)
            if result.error:
                failures += 1
                self.stderr.write(f"{idp.slug}: kept the last-known-good metadata: {result.error}")
            elif result.changed:
                self.stdout.write(f"{idp.slug}: metadata updated: {jsonlib.dumps(result.changes)}")
            else:
                self.stdout.write(f"{idp.slug}: unchanged")
        if failures:
            raise CommandError(f"{failures} refresh(es) failed", returncode=1)

    def handle_list(self, *, json: bool, **_) -> None:
        idps = IdentityProvider.objects.order_by("slug")
        rows = [
            {**i.summary(), "identities": i.identities.count(), "last_login_at": i.last_login_at}
            for i in idps
        ]
        if json:
            self.print_json(rows)
            return
        if not rows:
            self.stdout.write("No identity providers configured.")
            return
        self.stdout.write(self.table(
            [[r["slug"], r["protocol"], "yes" if r["enabled"] else "no",
              "LEGACY" if r["legacy_crypto"] else "-", r["identities"],
              r["last_login_at"] or "never", r["name"]] for r in rows],
            ["SLUG", "PROTOCOL", "ENABLED", "CRYPTO", "IDENTITIES", "LAST LOGIN", "NAME"],
        ))

    def handle_show(self, *, slug: str, **_) -> None:
        idp = service.get_idp(slug)
        self.print_json({**idp.summary(), "identities": idp.identities.count(),
                         "last_login_at": idp.last_login_at, "created_at": idp.created_at})

    def handle_enable(self, *, actor: str, slug: str, **_) -> None:
        changed = service.set_enabled(slug, True, actor=actor)
        state = "enabled" if changed else "was already enabled"
        self.stdout.write(self.style.SUCCESS(f"IdP {slug} {state}."))

    def handle_disable(self, *, actor: str, slug: str, **_) -> None:
        changed = service.set_enabled(slug, False, actor=actor)
        state = "disabled" if changed else "was already disabled"
        self.stdout.write(self.style.SUCCESS(f"IdP {slug} {state}."))

    def handle_remove(self, *, actor: str, slug: str, force: bool, **_) -> None:
        service.remove(slug, force=force, actor=actor)
        self.stdout.write(self.style.SUCCESS(f"IdP {slug} removed."))
