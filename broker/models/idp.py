"""Identity providers: one row per SAML IdP or OpenID Provider, configured at run time."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,62})$",
    "Lower-case letters, digits and hyphens, starting with a letter or digit (max 63).",
)


class IdentityProvider(models.Model):
    class Protocol(models.TextChoices):
        SAML = "saml", "SAML 2.0"
        OIDC = "oidc", "OpenID Connect"

    slug = models.CharField(
        max_length=63, unique=True, validators=[slug_validator],
        help_text="Appears in URLs (/sso/<slug>/...) and in audit events; never reused.",
    )
    name = models.CharField("display name", max_length=200)
    protocol = models.CharField(max_length=8, choices=Protocol.choices)
    enabled = models.BooleanField(default=True)
    # Protocol-specific settings (SAML metadata source and options; OIDC issuer, client id,
    # secret *references*). Owned and validated by broker.protocols.<protocol>.
    config = models.JSONField(default=dict, blank=True)
    attribute_map = models.JSONField(
        default=dict, blank=True,
        help_text='IdP attribute name -> canonical name, e.g. {"urn:oid:1.3.6.1.4.1.5923'
        '.1.1.1.6": "eppn"}. Overrides the built-in table.',
    )
    subject_source = models.CharField(
        max_length=200, blank=True,
        help_text="Empty: the protocol's subject (SAML persistent NameID, OIDC sub). "
        "Otherwise the canonical attribute that holds a stable, unique, never-reassigned id.",
    )
    jit_allowed = models.BooleanField(
        "just-in-time provisioning", default=True,
        help_text="Create a local user at the first login of an unknown subject.",
    )
    clock_skew_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the global CLOCK_SKEW_SECONDS.",
    )
    legacy_crypto = models.BooleanField(
        default=False,
        help_text="Accept SHA-1 and RSA-1_5 / 3DES from this IdP. A warning, and audited.",
    )
    last_login_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "identity provider"

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    def clean(self) -> None:
        from broker.redaction import secret_paths

        leaked = secret_paths(self.config)
        if leaked:
            raise ValidationError({"config": (
                "Secrets are never stored in the configuration; reference them instead "
                f"(e.g. client_secret_env / client_secret_file): {', '.join(leaked)}"
            )})

    @property
    def clock_skew(self) -> int:
        if self.clock_skew_seconds is None:
            return settings.CLOCK_SKEW_SECONDS
        return self.clock_skew_seconds

    def summary(self) -> dict:
        """Non-secret description for audit before/after values and the CLI."""
        from broker.redaction import redact

        return {
            "slug": self.slug,
            "name": self.name,
            "protocol": self.protocol,
            "enabled": self.enabled,
            # The metadata document itself is bulky and public: record its fingerprints instead.
            "config": redact({k: v for k, v in self.config.items() if not k.endswith("_xml")}),
            "attribute_map": self.attribute_map,
            "subject_source": self.subject_source,
            "jit_allowed": self.jit_allowed,
            "clock_skew_seconds": self.clock_skew_seconds,
            "legacy_crypto": self.legacy_crypto,
        }
