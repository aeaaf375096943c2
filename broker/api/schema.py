"""OpenAPI security schemes for the Admin API's authentication classes (drf-spectacular).

Imported by ``broker.api.urls`` so the extensions are registered before a schema is built.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerScheme(OpenApiAuthenticationExtension):
    target_class = "broker.api.authentication.BearerAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "An access token (JWT) from a configured OpenID Provider, audience "
                           "API_AUDIENCE. ID tokens are refused.",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "broker.api.authentication.SessionAuthentication"
    name = "sessionAuth"

    def get_security_definition(self, auto_schema):
        from django.conf import settings

        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME,
                "description": "A broker browser session; unsafe methods need the CSRF token "
                               "(X-CSRFToken header)."}


# Statuses every authenticated operation can answer, added where a view did not declare them.
COMMON = {
    "401": "No credentials, or an invalid/expired token (WWW-Authenticate: Bearer).",
    "403": "Authenticated, but no role that allows this (or a failed CSRF check).",
    "503": "A backend (database, Redis, the token issuer's keys) is unavailable; retry later.",
}


def add_error_responses(result, generator, request, public):
    """POSTPROCESSING_HOOKS: closed request bodies; the common error statuses with the Error body."""
    # Request bodies refuse unknown fields (StrictSerializer): say so, so clients and fuzzers know.
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and schema.get("type") == "object" and "properties" in schema:
            schema["additionalProperties"] = False
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            common = dict(COMMON)
            if "{" in path:
                common["404"] = "No such object."
            for code, description in common.items():
                responses.setdefault(code, {
                    "description": description, "content": {"application/json": {"schema": ref}}})
    return result
