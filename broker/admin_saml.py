"""Admin pages for SAML IdPs: register from metadata (paste, upload or URL), refresh."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from broker.models.idp import slug_validator


def json_object(raw: str | None) -> dict:
    """A form field's text as a JSON object (attribute maps)."""
    try:
        value = json.loads(raw or "{}")
    except ValueError as exc:
        raise ValidationError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValidationError("must be a JSON object")
    return value


class SamlRegistrationForm(forms.Form):
    slug = forms.CharField(max_length=63, validators=[slug_validator])
    name = forms.CharField(max_length=200, required=False)
    metadata_url = forms.URLField(required=False, assume_scheme="https",
                                  help_text="Fetched now and by `idp refresh`.")
    metadata_file = forms.FileField(required=False)
    metadata_xml = forms.CharField(widget=forms.Textarea(attrs={"rows": 8}), required=False,
                                   label="or paste the metadata XML")
    entity_id = forms.CharField(required=False, help_text="Pick this IdP out of an aggregate.")
    metadata_signing_cert = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}), required=False,
        help_text="PEM. When set, the metadata must be signed with it (unsigned copies refused).")
    sp_entity_id = forms.CharField(required=False, help_text="Our entity ID (legacy IdPs only).")
    subject_attribute = forms.CharField(required=False, help_text="e.g. eppn; empty: the NameID.")
    attribute_map = forms.CharField(required=False, initial="{}", help_text="JSON object.")
    allow_unsolicited = forms.BooleanField(required=False, label="Allow IdP-initiated logins")
    legacy_crypto = forms.BooleanField(
        required=False, help_text="Accept SHA-1/RSA-1_5/3DES. Weakens security; audited.")
    jit_allowed = forms.BooleanField(required=False, initial=True, label="Just-in-time provisioning")

    def clean_attribute_map(self) -> dict:
        return json_object(self.cleaned_data.get("attribute_map"))

    def clean(self):
        data = super().clean()
        sources = [bool(data.get("metadata_url")), bool(data.get("metadata_file")),
                   bool(data.get("metadata_xml"))]
        if sum(sources) != 1:
            raise ValidationError("Give exactly one of: metadata URL, file, pasted XML.")
        return data


def register_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    from broker.protocols.saml.metadata import MetadataError, register

    if not model_admin.has_add_permission(request):
        return HttpResponse(status=403)
    form = SamlRegistrationForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        xml = data["metadata_file"].read() if data.get("metadata_file") else (
            data["metadata_xml"].encode() if data.get("metadata_xml") else None)
        options = {"allow_unsolicited": data["allow_unsolicited"], "authn_binding": "redirect"}
        if data.get("sp_entity_id"):
            options["sp_entity_id"] = data["sp_entity_id"]
        try:
            idp = register(
                data["slug"], name=data.get("name") or data["slug"], metadata_xml=xml,
                metadata_url=data.get("metadata_url") or None, entity_id=data.get("entity_id") or None,
                signing_cert_pem=data.get("metadata_signing_cert") or None, options=options,
                legacy_crypto=data["legacy_crypto"], jit_allowed=data["jit_allowed"],
                subject_source=data.get("subject_attribute") or "", attribute_map=data["attribute_map"],
                actor=request.user.get_username(), via="admin",
            )
        except (MetadataError, ValidationError) as exc:
            form.add_error(None, f"Refused: {exc}")
        else:
            messages.success(request, f"SAML IdP {idp.slug} registered. Give it our metadata: "
                                      f"/sso/{idp.slug}/saml/metadata/")
            return HttpResponseRedirect(reverse("admin:broker_identityprovider_change", args=[idp.pk]))
    context = {**model_admin.admin_site.each_context(request), "form": form,
               "title": "Register a SAML identity provider", "opts": model_admin.model._meta}
    return TemplateResponse(request, "admin/broker/saml_register.html", context)


@admin.action(description="Refresh SAML metadata now (keeps the last-known-good copy on failure)")
def refresh_metadata(model_admin: admin.ModelAdmin, request: HttpRequest, queryset) -> None:
    from broker.protocols.saml.metadata import refresh

    for idp in queryset.filter(protocol="saml"):
        result = refresh(idp, actor=request.user.get_username(), via="admin")
        if result.error:
            model_admin.message_user(request, f"{idp.slug}: {result.error}", messages.WARNING)
        else:
            state = "updated" if result.changed else "unchanged"
            model_admin.message_user(request, f"{idp.slug}: metadata {state}")
