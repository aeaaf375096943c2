"""Admin API views for read-only resources: federated identities, break-glass accounts (no
secrets) and the audit log (auditors and admins)."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from broker.breakglass.accounts import summary
from broker.models import AuditEvent, BreakGlassAccount, FederatedIdentity, UserRole

from . import serializers as s
from .permissions import IsAuditorOrAdmin


class IdentityViewSet(viewsets.ReadOnlyModelViewSet):
    """Federated identities: the (IdP, subject) -> local user links. Read-only."""

    serializer_class = s.IdentitySerializer
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet:
        return FederatedIdentity.objects.select_related("idp", "user").prefetch_related(
            Prefetch("user__broker_roles", queryset=UserRole.objects.select_related("role"))
        ).order_by("id")

    @extend_schema(parameters=[s.IdentityFilterSerializer])
    def list(self, request, *args, **kwargs):
        filters = s.IdentityFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        qs = self.get_queryset()
        if f.get("idp"):
            qs = qs.filter(idp__slug=f["idp"])
        if f.get("subject"):
            qs = qs.filter(subject=f["subject"])
        if f.get("username"):
            qs = qs.filter(user__username=f["username"])
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class BreakGlassViewSet(viewsets.ReadOnlyModelViewSet):
    """Break-glass accounts: status and factors only, never a secret. Managed with the CLI."""

    serializer_class = s.BreakGlassSerializer
    lookup_field = "name"
    lookup_url_kwarg = "name"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}"

    def get_queryset(self) -> QuerySet:
        return BreakGlassAccount.objects.select_related("user").order_by("user__username")

    def get_object(self) -> BreakGlassAccount:
        return get_object_or_404(self.get_queryset(), user__username=self.kwargs["name"])

    def get_serializer(self, instance=None, *args, **kwargs):
        if kwargs.get("many"):
            instance = [summary(account) for account in instance]
        elif instance is not None:
            instance = summary(instance)
        return super().get_serializer(instance, *args, **kwargs)


def _actor(request) -> str:
    user = request.user
    return user.get_username() if hasattr(user, "get_username") else str(user)


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first by default. Auditors and admins only."""

    serializer_class = s.AuditEventSerializer
    permission_classes = [IsAuditorOrAdmin]
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet:
        return AuditEvent.objects.all()

    @extend_schema(parameters=[s.AuditFilterSerializer])
    def list(self, request, *args, **kwargs):
        filters = s.AuditFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        qs = self.get_queryset()
        if "since" in f:
            qs = qs.filter(time__gte=f["since"])
        if "until" in f:
            qs = qs.filter(time__lt=f["until"])
        action = f.get("action")
        if action and action.endswith(("*", ".")):
            qs = qs.filter(action__startswith=action.rstrip("*"))
        elif action:
            qs = qs.filter(action=action)
        for name in ("actor", "idp", "outcome"):
            if f.get(name):
                qs = qs.filter(**{name: f[name]})
        page = self.paginate_queryset(qs.order_by(f["ordering"]))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(parameters=[s.AuditExportSerializer], responses={(200, "application/x-ndjson"): str})
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request, *args, **kwargs):
        """Stream a signed export (JSON lines + manifest), verifiable offline with
        ``manage.py audit verify --export FILE --public-key KEY``. The export is audited."""
        from django.http import StreamingHttpResponse

        from broker.audit import export as audit_export

        filters = s.AuditExportSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        wanted = audit_export.Filters(since=f["since"], until=f["until"], action=f.get("action", ""),
                                      actor=f.get("actor", ""), idp=f.get("idp", ""))
        try:
            prepared = audit_export.prepare(wanted, "jsonl", actor=_actor(request), destination="api")
        except audit_export.ExportError as exc:
            return Response({"code": "export_refused", "message": str(exc)}, status=exc.status)
        response = StreamingHttpResponse(prepared.chunks(), content_type="application/x-ndjson")
        response["Content-Disposition"] = (
            f'attachment; filename="audit-{f["since"]:%Y%m%d}-{f["until"]:%Y%m%d}.jsonl"')
        response["Cache-Control"] = "no-store"
        response["X-Audit-Export-Id"] = prepared.export_id
        return response
