"""Admin page to register an OpenID Provider (discovery fetched and checked on submit).

Secrets are given as references only, under the same limits as the Admin API (a web admin
must not point the broker at another secret it holds); the CLI has no such limits.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from rest_framework import serializers

from broker.admin_saml import json_object
from broker.api.fields import check_env_reference, check_file_reference
from broker.errors import LoginError
from broker.models.idp import slug_validator


def _reference(check, value: str) -> str:
    if not value:
        return ""
    try:
        return check(value)
    except serializers.ValidationError as exc:
        raise ValidationError("; ".join(str(d) for d in exc.detail)) from exc


class OidcRegistrationForm(forms.Form):
    slug = forms.CharField(max_length=63, validators=[slug_validator])
    name = forms.CharField(max_length=200, required=False)
    issuer = forms.URLField(assume_scheme="https", help_text="Exactly as the provider's discovery names it.")
    client_id = forms.CharField(max_length=300)
    client_secret_env = forms.CharField(required=False, help_text="Environment variable with the secret.")
    client_secret_file = forms.CharField(required=False, help_text="File (0600) with the secret.")
    auth_method = forms.ChoiceField(choices=[("client_secret_post", "client_secret_post"),
                                             ("client_secret_basic", "client_secret_basic")])
    scopes = forms.CharField(initial="openid profile email")
    algorithms = forms.CharField(initial="RS256,PS256,ES256", help_text="Never none; HS* only if listed.")
    attribute_map = forms.CharField(required=False, initial="{}", help_text="JSON object.")
    jit_allowed = forms.BooleanField(required=False, initial=True, label="Just-in-time provisioning")

    def clean_client_secret_env(self) -> str:
        return _reference(check_env_reference, self.cleaned_data.get("client_secret_env", ""))

    def clean_client_secret_file(self) -> str:
        return _reference(check_file_reference, self.cleaned_data.get("client_secret_file", ""))

    def clean_attribute_map(self) -> dict:
        return json_object(self.cleaned_data.get("attribute_map"))

    def clean(self):
        data = super().clean()
        if bool(data.get("client_secret_env")) == bool(data.get("client_secret_file")):
            raise ValidationError("Give exactly one secret reference: variable or file.")
        return data


def register_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    from broker.protocols.oidc.discovery import register

    if not model_admin.has_add_permission(request):
        return HttpResponse(status=403)
    form = OidcRegistrationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            idp = register(
                data["slug"], issuer=data["issuer"], client_id=data["client_id"],
                name=data.get("name") or data["slug"], client_secret_env=data["client_secret_env"],
                client_secret_file=data["client_secret_file"], scopes=data["scopes"],
                auth_method=data["auth_method"],
                algorithms=[a.strip() for a in data["algorithms"].split(",") if a.strip()],
                jit_allowed=data["jit_allowed"], attribute_map=data["attribute_map"],
                actor=request.user.get_username(), via="admin",
            )
        except LoginError as exc:
            form.add_error(None, f"Refused: {exc.code}: {exc.detail}")
        except ValidationError as exc:
            form.add_error(None, f"Refused: {'; '.join(exc.messages)}")
        else:
            messages.success(request, f"OpenID Provider {idp.slug} registered. Redirect URI to "
                                      f"register there: /sso/{idp.slug}/oidc/callback/")
            return HttpResponseRedirect(reverse("admin:broker_identityprovider_change", args=[idp.pk]))
    context = {**model_admin.admin_site.each_context(request), "form": form,
               "title": "Register an OpenID Provider", "opts": model_admin.model._meta}
    return TemplateResponse(request, "admin/broker/oidc_register.html", context)
