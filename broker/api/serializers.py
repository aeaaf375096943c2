"""Admin API serializers: validate input and shape output. No business logic: views hand
the validated data to the services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from broker.models import AuditEvent, FederatedIdentity, IdentityProvider, RoleMapping
from broker.models.idp import slug_validator
from broker.models.roles import MAX_PATTERN_LENGTH, role_name_validator
from broker.protocols.oidc.provider import ASYMMETRIC, AUTH_METHODS, DEFAULT_ALGORITHMS, DEFAULT_SCOPES
from broker.redaction import redact

from .fields import (
    AttributeMapField,
    BoundedDateTimeField,
    StrictSerializer,
    check_env_reference,
    check_file_reference,
    check_json_shape,
    clean_text,
)


class ErrorSerializer(serializers.Serializer):
    """Every error: a stable ``code``, a human ``message``; ``errors`` holds field details."""

    code = serializers.CharField()
    message = serializers.CharField()
    errors = serializers.DictField(required=False)


# --- identity providers ----------------------------------------------------------------------

# Non-secret configuration shown per protocol; everything else in ``config`` stays inside.
PUBLIC_CONFIG = {
    "saml": ("entity_id", "metadata_url", "metadata_valid_until", "metadata_fetched_at", "sso", "slo",
             "signing_cert_fingerprints", "signing_cert_not_after", "allow_unsolicited", "authn_binding",
             "sp_entity_id"),
    "oidc": ("issuer", "client_id", "scopes", "auth_method", "algorithms", "userinfo",
             "discovery_fetched_at"),
}
CREDENTIALS = {
    "client_secret": ("client_secret_env", "client_secret_file"),
    "client_secret_secondary": ("client_secret_secondary_env", "client_secret_secondary_file"),
    "private_key": (None, "private_key_file"),
    "mtls_key": (None, "mtls_key_file"),
}


def public_config(idp: IdentityProvider) -> dict[str, Any]:
    cfg = idp.config or {}
    shown = redact({k: cfg[k] for k in PUBLIC_CONFIG.get(idp.protocol, ()) if k in cfg})
    if idp.protocol == IdentityProvider.Protocol.SAML:
        shown["metadata_signature_required"] = bool(cfg.get("metadata_signing_cert"))
    else:
        # Write-only: say where each credential comes from, never the reference itself.
        shown["credentials"] = {
            name: ("env" if env and cfg.get(env) else "file" if cfg.get(file) else None)
            for name, (env, file) in CREDENTIALS.items()
        }
    return shown


class IdpSerializer(serializers.ModelSerializer):
    config = serializers.SerializerMethodField()
    identities = serializers.SerializerMethodField(help_text="Linked federated identities.")

    class Meta:
        model = IdentityProvider
        fields = ("slug", "name", "protocol", "enabled", "attribute_map", "subject_source", "jit_allowed",
                  "clock_skew_seconds", "legacy_crypto", "config", "identities", "last_login_at",
                  "created_at", "updated_at")
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_config(self, idp: IdentityProvider) -> dict:
        return public_config(idp)

    def get_identities(self, idp: IdentityProvider) -> int:
        count = getattr(idp, "identity_count", None)
        return idp.identities.count() if count is None else count


class _IdpCommon(StrictSerializer):
    slug = serializers.CharField(max_length=63, validators=[slug_validator])
    name = serializers.CharField(max_length=200, required=False, default="")
    attribute_map = AttributeMapField(required=False, default=dict)
    jit_allowed = serializers.BooleanField(required=False, default=True)
    clock_skew_seconds = serializers.IntegerField(min_value=0, max_value=3600, required=False,
                                                  allow_null=True, default=None)
    enabled = serializers.BooleanField(required=False, default=True)


class SamlIdpCreateSerializer(_IdpCommon):
    """Register a SAML 2.0 IdP from its metadata: a URL (fetched now and by refresh) or the XML."""

    protocol = serializers.ChoiceField(choices=["saml"])
    metadata_url = serializers.URLField(max_length=2000, required=False, allow_blank=False)
    metadata_xml = serializers.CharField(max_length=10 * 1024 * 1024, required=False, trim_whitespace=False)
    entity_id = serializers.CharField(max_length=1024, required=False, allow_blank=True, default="")
    metadata_signing_cert = serializers.CharField(max_length=20000, required=False, allow_blank=True,
                                                  default="", help_text="PEM certificate (public).")
    sp_entity_id = serializers.CharField(max_length=1024, required=False, allow_blank=True, default="")
    allow_unsolicited = serializers.BooleanField(required=False, default=False)
    authn_binding = serializers.ChoiceField(choices=["redirect", "post"], required=False, default="redirect")
    legacy_crypto = serializers.BooleanField(required=False, default=False)
    subject_source = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

    def validate(self, attrs: dict) -> dict:
        if bool(attrs.get("metadata_url")) == bool(attrs.get("metadata_xml")):
            raise serializers.ValidationError("give exactly one of metadata_url or metadata_xml")
        if attrs.get("metadata_xml"):
            clean_text(attrs["metadata_xml"], "metadata_xml", 10 * 1024 * 1024)
        return attrs


class OidcIdpCreateSerializer(_IdpCommon):
    """Register an OpenID Provider; its discovery document and JWKS are fetched now. Secrets are
    references only (an environment variable name or a file path), never values."""

    protocol = serializers.ChoiceField(choices=["oidc"])
    issuer = serializers.URLField(max_length=2000)
    client_id = serializers.CharField(max_length=255)
    client_secret_env = serializers.CharField(max_length=128, required=False, allow_blank=True, default="")
    client_secret_file = serializers.CharField(max_length=1024, required=False, allow_blank=True, default="")
    private_key_file = serializers.CharField(max_length=1024, required=False, allow_blank=True, default="")
    scopes = serializers.CharField(max_length=500, required=False, default=DEFAULT_SCOPES)
    auth_method = serializers.ChoiceField(choices=AUTH_METHODS, required=False, allow_null=True, default=None)
    algorithms = serializers.ListField(child=serializers.ChoiceField(choices=ASYMMETRIC), required=False,
                                       min_length=1, max_length=len(ASYMMETRIC),
                                       default=list(DEFAULT_ALGORITHMS))
    ca_file = serializers.CharField(max_length=1024, required=False, allow_blank=True, default="")
    mtls_cert_file = serializers.CharField(max_length=1024, required=False, allow_blank=True, default="")
    mtls_key_file = serializers.CharField(max_length=1024, required=False, allow_blank=True, default="")
    userinfo = serializers.BooleanField(required=False, default=True)

    def validate_client_secret_env(self, value: str) -> str:
        return check_env_reference(value) if value else value

    def validate_client_secret_file(self, value: str) -> str:
        return check_file_reference(value) if value else value

    def validate_private_key_file(self, value: str) -> str:
        return check_file_reference(value) if value else value

    def validate_mtls_key_file(self, value: str) -> str:
        return check_file_reference(value) if value else value

    def validate(self, attrs: dict) -> dict:
        refs = [k for k in ("client_secret_env", "client_secret_file", "private_key_file") if attrs.get(k)]
        if len(refs) != 1:
            raise serializers.ValidationError(
                "give exactly one of client_secret_env, client_secret_file or private_key_file")
        if attrs["auth_method"] is None:
            private_key = bool(attrs.get("private_key_file"))
            attrs["auth_method"] = "private_key_jwt" if private_key else "client_secret_post"
        return attrs


class IdpUpdateSerializer(StrictSerializer):
    """The fields that may change after registration (trust material only via refresh)."""

    name = serializers.CharField(max_length=200, required=False)
    attribute_map = AttributeMapField(required=False)
    subject_source = serializers.CharField(max_length=200, required=False, allow_blank=True)
    jit_allowed = serializers.BooleanField(required=False)
    clock_skew_seconds = serializers.IntegerField(min_value=0, max_value=3600, required=False,
                                                  allow_null=True)
    legacy_crypto = serializers.BooleanField(required=False)


class RefreshResultSerializer(serializers.Serializer):
    slug = serializers.CharField()
    changed = serializers.BooleanField()
    changes = serializers.DictField()


# --- roles and mappings --------------------------------------------------------------------------


class RoleSerializer(StrictSerializer):
    """A local role; its Django group carries the permissions."""

    name = serializers.CharField(max_length=64, validators=[role_name_validator])
    description = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    grants_staff = serializers.BooleanField(required=False, default=False,
                                            help_text="Holders may enter the Django admin.")
    grants_superuser = serializers.BooleanField(required=False, default=False,
                                                help_text="Holders get every permission (implies staff).")
    mappings = serializers.IntegerField(read_only=True, source="mapping_count", default=None)
    holders = serializers.IntegerField(read_only=True, source="holder_count", default=None)
    created_at = serializers.DateTimeField(read_only=True)


class RoleUpdateSerializer(StrictSerializer):
    """A role's editable fields (its name is fixed: mappings refer to it)."""

    description = serializers.CharField(max_length=300, required=False, allow_blank=True)
    grants_staff = serializers.BooleanField(required=False)
    grants_superuser = serializers.BooleanField(required=False)


class MappingSerializer(StrictSerializer):
    """``claim`` (canonical attribute name) matching ``value`` grants ``role``; ``idp`` null: any IdP."""

    id = serializers.IntegerField(read_only=True)
    idp = serializers.CharField(max_length=63, allow_null=True, required=False, default=None,
                                validators=[slug_validator], help_text="IdP slug; null: every IdP.")
    claim = serializers.CharField(max_length=200)
    value = serializers.CharField(max_length=MAX_PATTERN_LENGTH, trim_whitespace=False,
                                  help_text="The value, or with match=regex a pattern for the whole value.")
    match = serializers.ChoiceField(choices=RoleMapping.Match.choices, required=False, default="exact")
    role = serializers.CharField(max_length=64, help_text="An existing role's name.")
    created_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, mapping: RoleMapping) -> dict:
        return {**mapping.summary(), "created_at": serializers.DateTimeField().to_representation(
            mapping.created_at)}


class MappingUpdateSerializer(StrictSerializer):
    """The fields to change; the others keep their values."""

    idp = serializers.CharField(max_length=63, allow_null=True, required=False, validators=[slug_validator])
    claim = serializers.CharField(max_length=200, required=False)
    value = serializers.CharField(max_length=MAX_PATTERN_LENGTH, trim_whitespace=False, required=False)
    match = serializers.ChoiceField(choices=RoleMapping.Match.choices, required=False)
    role = serializers.CharField(max_length=64, required=False)


class SimulateSerializer(StrictSerializer):
    """Claims to try against the mapping rules."""

    idp = serializers.CharField(max_length=63, required=False, allow_null=True, default=None,
                                validators=[slug_validator],
                                help_text="Apply this IdP's attribute map and rules (default: global rules).")
    claims = serializers.DictField(help_text="Claims or SAML attributes, as the IdP sends them.")

    def validate_claims(self, claims: dict) -> dict:
        check_json_shape(claims, "claims")
        return claims


class RuleSerializer(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True)
    idp = serializers.CharField(allow_null=True)
    claim = serializers.CharField()
    value = serializers.CharField()
    match = serializers.CharField()
    description = serializers.CharField()


class SimulationSerializer(serializers.Serializer):
    idp = serializers.CharField(allow_null=True)
    attributes = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))
    roles = serializers.DictField(child=RuleSerializer(many=True))


# --- read-only resources ------------------------------------------------------------------------


class IdentitySerializer(serializers.ModelSerializer):
    idp = serializers.CharField(source="idp.slug", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    roles = serializers.SerializerMethodField()
    last_attributes = serializers.SerializerMethodField()

    class Meta:
        model = FederatedIdentity
        fields = ("id", "idp", "subject", "username", "user_id", "roles", "created_at", "last_login_at",
                  "last_attributes")
        read_only_fields = fields

    def get_roles(self, identity: FederatedIdentity) -> list[str]:
        return sorted({held.role.name for held in identity.user.broker_roles.all()})

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_last_attributes(self, identity: FederatedIdentity) -> dict:
        return redact(identity.last_attributes or {})


class IdentityFilterSerializer(serializers.Serializer):
    idp = serializers.CharField(max_length=63, required=False, help_text="IdP slug.")
    subject = serializers.CharField(max_length=512, required=False, help_text="Exact subject.")
    username = serializers.CharField(max_length=150, required=False, help_text="Local username.")


class MappingFilterSerializer(serializers.Serializer):
    idp = serializers.CharField(max_length=63, required=False,
                                help_text="Rules that apply to this IdP (its own and the global ones).")
    role = serializers.CharField(max_length=64, required=False)
    claim = serializers.CharField(max_length=200, required=False)


class BreakGlassFactorsSerializer(serializers.Serializer):
    totp = serializers.BooleanField()
    webauthn = serializers.IntegerField(help_text="Registered security keys.")


class BreakGlassSerializer(serializers.Serializer):
    """A break-glass account's status. No secret (password, TOTP seed, keys) is ever shown."""

    name = serializers.CharField()
    email = serializers.CharField()
    enabled = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    last_tested_at = serializers.DateTimeField(allow_null=True)
    rotate_required = serializers.BooleanField()
    rotated_at = serializers.DateTimeField(allow_null=True)
    factors = BreakGlassFactorsSerializer()
    federated = serializers.BooleanField()


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ("id", "seq", "time", "action", "outcome", "actor", "source_ip", "request_id", "idp",
                  "subject", "reason", "data", "prev_hash", "hash")
        read_only_fields = fields


class AuditExportSerializer(serializers.Serializer):
    since = BoundedDateTimeField(help_text="Events at or after this time (ISO 8601).")
    until = BoundedDateTimeField(help_text="Events before this time (ISO 8601).")
    action = serializers.CharField(max_length=64, required=False, help_text="Exact action.")
    actor = serializers.CharField(max_length=300, required=False)
    idp = serializers.CharField(max_length=63, required=False)


class AuditFilterSerializer(serializers.Serializer):
    since = BoundedDateTimeField(required=False, help_text="Events at or after this time (ISO 8601).")
    until = BoundedDateTimeField(required=False, help_text="Events before this time (ISO 8601).")
    action = serializers.CharField(max_length=64, required=False,
                                   help_text="Exact action, or a prefix ending in '.' or '*' (login.*).")
    actor = serializers.CharField(max_length=300, required=False)
    idp = serializers.CharField(max_length=63, required=False)
    outcome = serializers.CharField(max_length=16, required=False)
    ordering = serializers.ChoiceField(choices=["id", "-id"], required=False, default="-id",
                                       help_text="-id: newest first (default); id: oldest first.")
