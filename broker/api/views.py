"""Admin API views for what admins change: IdPs, roles, mappings (+ the simulator).

Thin: validate with a serializer, call the service (``via="api"``, the caller as actor), render.
Read-only resources (identities, break-glass accounts, audit events) are in ``views_read``.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers as drf_serializers
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from broker.models import IdentityProvider, Role, RoleMapping
from broker.protocols.oidc import discovery
from broker.protocols.saml import metadata
from broker.services import idps as idp_service
from broker.services import roles as role_service
from broker.services.lookup import IdpNotFound, RoleNotFound

from . import serializers as s
from .exceptions import ApiError, BadGateway, Conflict

VIA = "api"
FORCE = OpenApiParameter("force", OpenApiTypes.BOOL, description="Also remove what depends on it.")
ERRORS = {400: s.ErrorSerializer, 404: s.ErrorSerializer}


def actor(request) -> str:
    return request.user.get_username()


def _force(request) -> bool:
    return request.query_params.get("force", "").strip().lower() in {"1", "true", "yes", "on"}


def _reference_error(exc: Exception) -> ApiError:
    """An unknown role or IdP named in a request body is a bad request, not a missing URL."""
    code = "role_not_found" if isinstance(exc, RoleNotFound) else "idp_not_found"
    return ApiError(str(exc), code)


class IdpViewSet(viewsets.GenericViewSet):
    """Identity providers. Secrets are write-only references and never shown."""

    serializer_class = s.IdpSerializer
    lookup_field = "slug"
    lookup_value_regex = r"[a-z0-9][a-z0-9-]{0,62}"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return IdentityProvider.objects.annotate(identity_count=Count("identities")).order_by("slug")

    def _fresh(self, slug: str) -> dict:
        return s.IdpSerializer(self.get_queryset().get(slug=slug)).data

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, slug: str):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="IdpCreate", resource_type_field_name="protocol",
            serializers={"saml": s.SamlIdpCreateSerializer, "oidc": s.OidcIdpCreateSerializer}),
        responses={201: s.IdpSerializer, 400: s.ErrorSerializer, 409: s.ErrorSerializer},
        description="Register a SAML IdP (metadata URL or XML) or an OpenID Provider (discovery and "
                    "JWKS are fetched now). Nothing is registered when they cannot be verified.")
    def create(self, request):
        data = request.data
        protocol = data.get("protocol") if isinstance(data, Mapping) else None
        creators = {"saml": s.SamlIdpCreateSerializer, "oidc": s.OidcIdpCreateSerializer}
        serializer_class = creators.get(protocol) if isinstance(protocol, str) else None
        if serializer_class is None:
            raise drf_serializers.ValidationError({"protocol": ['must be "saml" or "oidc"']})
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        v = serializer.validated_data
        if IdentityProvider.objects.filter(slug=v["slug"]).exists():
            raise Conflict(f"an IdP named {v['slug']!r} already exists", "already_exists")
        common = {"name": v["name"], "jit_allowed": v["jit_allowed"], "enabled": v["enabled"],
                  "clock_skew_seconds": v["clock_skew_seconds"], "attribute_map": v["attribute_map"],
                  "actor": actor(request), "via": VIA}
        if protocol == "saml":
            options = {"allow_unsolicited": v["allow_unsolicited"], "authn_binding": v["authn_binding"]}
            if v["sp_entity_id"]:
                options["sp_entity_id"] = v["sp_entity_id"]
            metadata.register(
                v["slug"], metadata_url=v.get("metadata_url") or None,
                metadata_xml=v["metadata_xml"].encode() if v.get("metadata_xml") else None,
                entity_id=v["entity_id"] or None, signing_cert_pem=v["metadata_signing_cert"] or None,
                options=options, legacy_crypto=v["legacy_crypto"], subject_source=v["subject_source"],
                **common)
        else:
            options = {k: v[k] for k in ("ca_file", "mtls_cert_file", "mtls_key_file", "userinfo")}
            discovery.register(
                v["slug"], issuer=v["issuer"], client_id=v["client_id"],
                client_secret_env=v["client_secret_env"], client_secret_file=v["client_secret_file"],
                private_key_file=v["private_key_file"], scopes=v["scopes"], auth_method=v["auth_method"],
                algorithms=v["algorithms"], options=options, **common)
        return Response(self._fresh(v["slug"]), status=status.HTTP_201_CREATED)

    @extend_schema(request=s.IdpUpdateSerializer, responses={200: s.IdpSerializer, **ERRORS})
    def partial_update(self, request, slug: str):
        idp = self.get_object()
        serializer = s.IdpUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        idp_service.update(idp.slug, actor=actor(request), via=VIA, **serializer.validated_data)
        return Response(self._fresh(idp.slug))

    @extend_schema(parameters=[FORCE], responses={204: None, 404: s.ErrorSerializer,
                                                  409: s.ErrorSerializer},
                   description="Refused (409) while federated identities are linked, unless force=true.")
    def destroy(self, request, slug: str):
        idp = self.get_object()
        try:
            idp_service.remove(idp.slug, force=_force(request), actor=actor(request), via=VIA)
        except DjangoValidationError as exc:
            raise Conflict("; ".join(exc.messages), "idp_has_identities") from exc
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _set_enabled(self, request, enabled: bool) -> Response:
        idp = self.get_object()
        idp_service.set_enabled(idp.slug, enabled, actor=actor(request), via=VIA)
        return Response(self._fresh(idp.slug))

    @extend_schema(request=None, responses={200: s.IdpSerializer, 404: s.ErrorSerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request, slug: str):
        return self._set_enabled(request, True)

    @extend_schema(request=None, responses={200: s.IdpSerializer, 404: s.ErrorSerializer})
    @action(detail=True, methods=["post"])
    def disable(self, request, slug: str):
        return self._set_enabled(request, False)

    @extend_schema(request=None, responses={200: s.RefreshResultSerializer, 404: s.ErrorSerializer,
                                            409: s.ErrorSerializer, 502: s.ErrorSerializer},
                   description="Fetch SAML metadata / OIDC discovery and JWKS again. On failure the "
                               "last-known-good copy is kept (502, audited).")
    @action(detail=True, methods=["post"])
    def refresh(self, request, slug: str):
        idp = self.get_object()
        if idp.protocol == IdentityProvider.Protocol.SAML:
            if not idp.config.get("metadata_url"):
                raise Conflict("registered from metadata XML: there is no URL to refresh from",
                               "not_refreshable")
            result = metadata.refresh(idp, actor=actor(request), via=VIA)
            error, changed, changes = result.error, result.changed, result.changes
        else:
            outcome = discovery.refresh(idp, actor=actor(request), via=VIA)
            error, changes = outcome.get("error", ""), outcome.get("changes", {})
            changed = bool(changes)
        if error:
            raise BadGateway(f"refresh failed, last-known-good copy kept: {error}", "refresh_failed")
        return Response({"slug": idp.slug, "changed": changed, "changes": changes})


class RoleViewSet(viewsets.GenericViewSet):
    """Local roles. A role targeted by mappings is only removed with force=true."""

    serializer_class = s.RoleSerializer
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return Role.objects.annotate(
            mapping_count=Count("mappings", distinct=True), holder_count=Count("holders", distinct=True),
        ).order_by("name")

    def _fresh(self, name: str) -> dict:
        return s.RoleSerializer(self.get_queryset().get(name=name)).data

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, name: str):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses={201: s.RoleSerializer, 400: s.ErrorSerializer, 409: s.ErrorSerializer})
    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        v = serializer.validated_data
        try:
            role_service.add_role(v["name"], description=v["description"], grants_staff=v["grants_staff"],
                                  grants_superuser=v["grants_superuser"], actor=actor(request), via=VIA)
        except DjangoValidationError as exc:
            raise Conflict("; ".join(exc.messages), "already_exists") from exc
        return Response(self._fresh(v["name"]), status=status.HTTP_201_CREATED)

    @extend_schema(request=s.RoleUpdateSerializer, responses={200: s.RoleSerializer, **ERRORS})
    def partial_update(self, request, name: str):
        role = self.get_object()
        serializer = s.RoleUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        v = serializer.validated_data
        role_service.update_role(
            role, description=v.get("description", role.description),
            grants_staff=v.get("grants_staff", role.grants_staff),
            grants_superuser=v.get("grants_superuser", role.grants_superuser),
            actor=actor(request), via=VIA)
        return Response(self._fresh(role.name))

    @extend_schema(parameters=[FORCE], responses={204: None, 404: s.ErrorSerializer,
                                                  409: s.ErrorSerializer},
                   description="Refused (409) while mappings target the role, unless force=true "
                               "(which removes them too). Holders lose the role now.")
    def destroy(self, request, name: str):
        role = self.get_object()
        try:
            role_service.remove_role(role.name, force=_force(request), actor=actor(request), via=VIA)
        except DjangoValidationError as exc:
            raise Conflict("; ".join(exc.messages), "role_has_mappings") from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class MappingViewSet(viewsets.GenericViewSet):
    """Mapping rules: a claim value (exact or full-match regex) -> a local role."""

    serializer_class = s.MappingSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return RoleMapping.objects.select_related("role", "idp").order_by("id")

    @extend_schema(parameters=[s.MappingFilterSerializer])
    def list(self, request):
        filters = s.MappingFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        qs = self.get_queryset()
        if f.get("idp"):
            qs = qs.filter(idp__slug=f["idp"]) | qs.filter(idp__isnull=True)
        if f.get("role"):
            qs = qs.filter(role__name=f["role"])
        if f.get("claim"):
            qs = qs.filter(claim=f["claim"])
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, pk: str):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses={201: s.MappingSerializer, 200: s.MappingSerializer, 400: s.ErrorSerializer},
                   description="Idempotent: an identical rule is answered 200 with the existing one.")
    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        v = serializer.validated_data
        try:
            mapping, created = role_service.set_mapping(
                claim=v["claim"], value=v["value"], role=v["role"], idp=v["idp"],
                regex=v["match"] == RoleMapping.Match.REGEX, actor=actor(request), via=VIA)
        except (RoleNotFound, IdpNotFound) as exc:
            raise _reference_error(exc) from exc
        return Response(self.get_serializer(mapping).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=s.MappingUpdateSerializer, responses={200: s.MappingSerializer, **ERRORS,
                                                                 409: s.ErrorSerializer})
    def partial_update(self, request, pk: str):
        mapping = self.get_object()
        serializer = s.MappingUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        current = mapping.summary()
        v = {**current, **serializer.validated_data}
        try:
            mapping = role_service.update_mapping(
                mapping.pk, claim=v["claim"], value=v["value"], role=v["role"], idp=v["idp"],
                regex=v["match"] == RoleMapping.Match.REGEX, actor=actor(request), via=VIA)
        except (RoleNotFound, IdpNotFound) as exc:
            raise _reference_error(exc) from exc
        return Response(self.get_serializer(self.get_queryset().get(pk=mapping.pk)).data)

    @extend_schema(responses={204: None, 404: s.ErrorSerializer})
    def destroy(self, request, pk: str):
        mapping = self.get_object()
        role_service.remove_mapping(mapping.pk, actor=actor(request), via=VIA)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.SimulateSerializer, responses={200: s.SimulationSerializer,
                                                                     400: s.ErrorSerializer},
                   description="Which roles would a login with these claims get, and which rule "
                               "granted each? Changes nothing (the `mapping test` simulator).")
    @action(detail=False, methods=["post"], url_path="test", serializer_class=s.SimulateSerializer)
    def simulate(self, request):
        serializer = s.SimulateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            sim = role_service.simulate(serializer.validated_data["claims"],
                                        idp=serializer.validated_data["idp"])
        except IdpNotFound as exc:
            raise _reference_error(exc) from exc
        return Response({
            "idp": sim.idp,
            "attributes": {k: list(v) for k, v in sim.attributes.items()},
            "roles": {role: [{"id": r.id, "idp": r.idp, "claim": r.claim, "value": r.value,
                              "match": r.match, "description": r.describe()} for r in rules]
                      for role, rules in sim.grants.items()},
        })
