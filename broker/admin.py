"""Django admin for IdPs, roles, mappings, federated identities and the audit log.

Every change made here is audited like a CLI change (``save_model``/``delete_model`` call
the same services), so the admin is never a side door.
"""

from __future__ import annotations

from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest
from django.urls import path
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from broker import admin_oidc, admin_saml, admin_simulator, admin_status, admin_testlogin, audit, rbac
from broker.models import AuditEvent, FederatedIdentity, IdentityProvider, Role, RoleMapping, UserRole
from broker.services import roles as roles_service


class AuditedAdmin(admin.ModelAdmin):
    """Record create/change/delete with before/after values (secrets redacted)."""

    audit_name = ""

    def _summary(self, obj) -> dict:
        return obj.summary() if hasattr(obj, "summary") else {"id": obj.pk, "repr": str(obj)}

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        before = None
        if change:
            before = self._summary(type(obj).objects.get(pk=obj.pk))
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if self.audit_name in ("mapping", "role"):
                rbac.rules_changed()
            audit.record(
                f"{self.audit_name}.{'changed' if change else 'created'}",
                actor=request.user.get_username(), via="admin",
                before=before, after=self._summary(obj),
            )

    def delete_model(self, request: HttpRequest, obj) -> None:
        with transaction.atomic():
            before = self._summary(obj)
            super().delete_model(request, obj)
            if self.audit_name in ("mapping", "role"):
                rbac.rules_changed()
            audit.record(f"{self.audit_name}.removed", actor=request.user.get_username(),
                         via="admin", before=before)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(IdentityProvider)
class IdentityProviderAdmin(AuditedAdmin):
    audit_name = "idp"
    actions = [admin_saml.refresh_metadata]
    change_list_template = "admin/broker/idp_changelist.html"
    change_form_template = "admin/broker/idp_change_form.html"

    def get_urls(self):
        custom = [path("add-saml/", self.admin_site.admin_view(self.add_saml_view),
                       name="broker_identityprovider_add_saml"),
                  path("add-oidc/", self.admin_site.admin_view(self.add_oidc_view),
                       name="broker_identityprovider_add_oidc"),
                  path("<int:object_id>/test-login/", self.admin_site.admin_view(self.test_login_view),
                       name="broker_identityprovider_test_login"),
                  path("test-login/<str:key>/", self.admin_site.admin_view(self.test_login_result_view),
                       name="broker_identityprovider_test_login_result")]
        return custom + super().get_urls()

    def add_saml_view(self, request):
        return admin_saml.register_view(self, request)

    def add_oidc_view(self, request):
        return admin_oidc.register_view(self, request)

    def test_login_view(self, request, object_id):
        return admin_testlogin.start_view(self, request, object_id)

    def test_login_result_view(self, request, key):
        return admin_testlogin.result_view(self, request, key)

    list_display = ("slug", "name", "protocol", "enabled", "last_login_at", "trust_age", "keys_age",
                    "cert_expiry", "warnings", "sp_metadata")

    @admin.display(description="metadata / discovery age")
    def trust_age(self, obj):
        return admin_status.humanize(admin_status.status(obj).trust_age)

    @admin.display(description="JWKS age")
    def keys_age(self, obj):
        return admin_status.humanize(admin_status.status(obj).keys_age)

    @admin.display(description="signing cert expiry")
    def cert_expiry(self, obj):
        expiry = admin_status.status(obj).cert_expiry
        return expiry.date().isoformat() if expiry else "-"

    @admin.display(description="warnings")
    def warnings(self, obj):
        items = admin_status.status(obj).warnings
        if not items:
            return "-"
        return format_html_join(mark_safe("<br>"), '<strong style="color:#b00">&#9888; {}</strong>',
                                ((w,) for w in items))

    @admin.display(description="SP metadata")
    def sp_metadata(self, obj):
        if obj.protocol != IdentityProvider.Protocol.SAML:
            return "-"
        return format_html('<a href="/sso/{}/saml/metadata/" download>download</a>', obj.slug)
    list_filter = ("protocol", "enabled", "legacy_crypto", "jit_allowed")
    search_fields = ("slug", "name")
    readonly_fields = ("last_login_at", "created_at", "updated_at")


class RoleMappingInline(admin.TabularInline):
    model = RoleMapping
    extra = 0
    fields = ("idp", "claim", "value", "match")

    def has_add_permission(self, request, obj=None):
        return False  # added through the audited mapping admin / CLI / API

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Role)
class RoleAdmin(AuditedAdmin):
    audit_name = "role"
    list_display = ("name", "description", "grants_staff", "grants_superuser", "created_at")
    list_filter = ("grants_staff", "grants_superuser")
    search_fields = ("name", "description")
    exclude = ("group",)
    inlines = [RoleMappingInline]

    def get_readonly_fields(self, request, obj=None):
        # Renaming would silently change what every mapping grants; add a new role instead.
        return ("name", "created_at") if obj else ("created_at",)

    def save_model(self, request, obj, form, change):
        actor = request.user.get_username()
        if change:
            roles_service.update_role(
                obj, description=obj.description, grants_staff=obj.grants_staff,
                grants_superuser=obj.grants_superuser, actor=actor, via="admin",
            )
            return
        role = roles_service.add_role(
            obj.name, description=obj.description, grants_staff=obj.grants_staff,
            grants_superuser=obj.grants_superuser, actor=actor, via="admin",
        )
        obj.pk, obj.group_id = role.pk, role.group_id

    def delete_model(self, request, obj):
        # The same path as `role remove`: holders lose the group and flags now.
        roles_service.remove_role(obj.name, actor=request.user.get_username(), via="admin")


@admin.register(RoleMapping)
class RoleMappingAdmin(AuditedAdmin):
    audit_name = "mapping"
    change_list_template = "admin/broker/mapping_changelist.html"

    def get_urls(self):
        custom = [path("simulate/", self.admin_site.admin_view(self.simulate_view),
                       name="broker_rolemapping_simulate")]
        return custom + super().get_urls()

    def simulate_view(self, request):
        return admin_simulator.simulator_view(self, request)

    list_display = ("role", "idp", "claim", "match", "value", "created_at")
    list_filter = ("role", "idp", "match", "claim")
    search_fields = ("claim", "value", "role__name")
    list_select_related = ("role", "idp")


@admin.register(FederatedIdentity)
class FederatedIdentityAdmin(AuditedAdmin):
    audit_name = "identity"
    list_display = ("idp", "subject", "user", "last_login_at", "created_at")
    list_filter = ("idp",)
    search_fields = ("subject", "user__username", "user__email")
    list_select_related = ("idp", "user")
    readonly_fields = ("last_login_at", "last_attributes", "created_at")
    raw_id_fields = ("user",)


@admin.register(UserRole)
class UserRoleAdmin(AuditedAdmin):
    """Manual role assignments (federation rows are owned by login-time sync)."""

    audit_name = "user_role"
    list_display = ("user", "role", "source", "granted_at")
    list_filter = ("source", "role")
    search_fields = ("user__username", "role__name")
    raw_id_fields = ("user",)

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            rbac.apply_role_effects(obj.user)

    def delete_model(self, request, obj):
        with transaction.atomic():
            user = obj.user
            super().delete_model(request, obj)
            rbac.apply_role_effects(user)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included (the database refuses changes anyway).

    Filters by action, outcome, actor, IdP and time. Holders of ``broker.export_auditevent``
    (the ``auditor`` role) also get ``export/?since=...&until=...[&action=&actor=&idp=]``:
    the signed JSONL export, audited like ``manage.py audit export``.
    """

    class ActorFilter(admin.SimpleListFilter):
        """Actors of recent events (any actor works as ``?actor=NAME``)."""

        title = "actor"
        parameter_name = "actor"
        recent = 5000

        def lookups(self, request, model_admin):
            last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
            actors = (AuditEvent.objects.filter(id__gt=last - self.recent).exclude(actor="").order_by()
                      .values_list("actor", flat=True).distinct())
            return [(a, a) for a in sorted(actors)[:100]]

        def queryset(self, request, queryset):
            return queryset.filter(actor=self.value()) if self.value() else queryset

    list_display = ("id", "seq", "time", "action", "outcome", "actor", "idp", "reason", "source_ip")
    list_filter = ("action", "outcome", ActorFilter, "idp", ("time", admin.DateFieldListFilter))
    search_fields = ("actor", "subject", "request_id", "reason", "action")
    date_hierarchy = "time"
    show_full_result_count = False  # no COUNT(*) over millions of rows per page

    def get_urls(self):
        from broker.audit.views import export_view

        custom = [path("export/", self.admin_site.admin_view(export_view), name="broker_auditevent_export")]
        return custom + super().get_urls()

    def get_actions(self, request):
        return {}  # no bulk delete, nothing else either

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
