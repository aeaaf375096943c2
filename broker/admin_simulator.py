"""The ``mapping test`` simulator in the admin: which roles would a login with these claims
get, and which rule granted each? Changes nothing."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from broker.models import IdentityProvider
from broker.services import roles as role_service
from broker.services.lookup import IdpNotFound


class SimulatorForm(forms.Form):
    idp = forms.ModelChoiceField(IdentityProvider.objects.all(), required=False, to_field_name="slug",
                                 empty_label="(any IdP: global rules only)")
    claims = forms.CharField(widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
                             initial='{"groups": ["api_admins"]}',
                             help_text="JSON object of claims or SAML attributes, as the IdP sends them.")

    def clean_claims(self) -> dict:
        try:
            value = json.loads(self.cleaned_data["claims"])
        except ValueError as exc:
            raise ValidationError(f"not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object")
        return value


def simulator_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    form = SimulatorForm(request.POST or None)
    result = None
    if request.method == "POST" and form.is_valid():
        idp = form.cleaned_data["idp"]
        try:
            sim = role_service.simulate(form.cleaned_data["claims"], idp=idp.slug if idp else None)
        except IdpNotFound as exc:
            form.add_error("idp", str(exc))
        else:
            result = {
                "attributes": {k: list(v) for k, v in sim.attributes.items()},
                "roles": [(role, [r.describe() for r in rules]) for role, rules in sim.grants.items()],
            }
    context = {**model_admin.admin_site.each_context(request), "form": form, "result": result,
               "title": "Mapping simulator", "opts": model_admin.model._meta}
    return TemplateResponse(request, "admin/broker/mapping_simulator.html", context)
