"""Every Admin API error is JSON ``{"code": "...", "message": "..."}`` with a proper status.

Domain exceptions from the services and adapters are translated here, once:

* Django ``ValidationError`` -> 400 ``invalid`` (409 ``conflict`` when it is a uniqueness clash),
* ``RoleNotFound`` / ``IdpNotFound`` -> 404,
* ``MetadataError`` / ``LoginError`` from a registration -> 400 with their own code
  (503 for ``backend_unavailable``),
* database/Redis outages -> 503 ``backend_unavailable``; ``IntegrityError`` -> 409;
  ``DataError`` (a value the database cannot store) -> 400,
* anything unexpected -> a logged 500 ``server_error`` that reveals nothing.

Field-level validation details, when there are any, are under ``errors``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status

from broker.errors import LoginError
from broker.services.lookup import IdpNotFound, RoleNotFound

logger = logging.getLogger("broker.api")


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "a backend (database, Redis or an IdP's keys) is unavailable; retry later"
    default_code = "backend_unavailable"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "the request conflicts with the current state"
    default_code = "conflict"


class BadGateway(exceptions.APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "the identity provider did not answer usefully"
    default_code = "upstream_failed"


class ApiError(exceptions.APIException):
    """A 400 with a specific code (e.g. ``metadata_signature``, ``role_not_found``)."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(self, message: str, code: str, status_code: int = 400) -> None:
        super().__init__(message, code)
        self.status_code = status_code


def _django_validation(exc: DjangoValidationError) -> exceptions.APIException:
    codes = {e.code for e in exc.error_list} if not hasattr(exc, "error_dict") else {
        e.code for errors in exc.error_dict.values() for e in errors
    }
    message = "; ".join(exc.messages) or "invalid input"
    if "unique" in codes:
        return Conflict(message, "conflict")
    error = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    error.summary = message  # type: ignore[attr-defined]
    return error


def _redis_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - redis is a hard dependency
        return ()
    return (RedisError,)


_UNAVAILABLE = (OperationalError, InterfaceError, *_redis_errors())


def translate(exc: Exception) -> Exception:
    """A domain or backend exception as the API exception it stands for."""
    from broker.protocols.saml.metadata import MetadataError

    if isinstance(exc, exceptions.APIException):
        return exc
    if isinstance(exc, Http404):
        return exceptions.NotFound("not found")
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, DjangoValidationError):
        return _django_validation(exc)
    if isinstance(exc, RoleNotFound):
        return exceptions.NotFound(str(exc), "role_not_found")
    if isinstance(exc, IdpNotFound):
        return exceptions.NotFound(str(exc), "idp_not_found")
    if isinstance(exc, MetadataError):
        return ApiError(f"metadata refused: {exc}", exc.reason)
    if isinstance(exc, LoginError):
        if exc.code == "backend_unavailable":
            return ServiceUnavailable(code="backend_unavailable")
        detail = f": {exc.detail}" if exc.detail else ""
        return ApiError(f"{exc.info.title}{detail}", exc.code)
    if isinstance(exc, IntegrityError):
        return Conflict("the change conflicts with existing data", "conflict")
    if isinstance(exc, DataError):
        return ApiError("a value cannot be stored (out of range or invalid characters)", "invalid")
    if isinstance(exc, _UNAVAILABLE):
        logger.error("API backend failure: %s", type(exc).__name__)
        return ServiceUnavailable()
    return exc


def _code(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "invalid"
    if isinstance(exc, exceptions.PermissionDenied) and str(exc.detail).startswith("CSRF Failed"):
        return "csrf_failed"
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else f"{prefix}{key}"
            out.extend(_flatten(value, f"{name}." if name else ""))
        return out
    if isinstance(detail, list):
        return [m for item in detail for m in _flatten(item, prefix)]
    return [f"{prefix[:-1]}: {detail}" if prefix else str(detail)]


def _audit_denied(request, code: str) -> None:
    """An authenticated caller refused for lack of a role: worth a line in the audit log
    (someone probing with a valid identity). Unauthenticated 401s (and CSRF failures, which
    leave the request unauthenticated) are not audited: anyone could flood the log with them."""
    from broker import audit
    from broker.login import BACKEND_ERRORS

    user = getattr(request, "user", None)
    if request is None or not getattr(user, "is_authenticated", False):
        return
    try:
        audit.record("api.denied", outcome="failure", actor=user.get_username(), reason=code,
                     method=request.method, path=request.path[:300],
                     roles=sorted(getattr(user, "roles", ())))
    except BACKEND_ERRORS:
        logger.warning("could not audit api.denied for %s", user.get_username())


def handler(exc: Exception, context: dict) -> Any:
    """DRF ``EXCEPTION_HANDLER``."""
    # Imported here: authentication classes import this module while DRF's views load.
    from rest_framework.views import exception_handler as drf_exception_handler

    exc = translate(exc)
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        logger.exception("unhandled API error", exc_info=exc)
        return JsonResponse({"code": "server_error",
                             "message": "internal error; it was logged with this request's ID"},
                            status=500)
    body: dict[str, Any] = {"code": _code(exc)}
    if isinstance(exc, exceptions.PermissionDenied):
        _audit_denied(context.get("request"), body["code"])
    if isinstance(exc, exceptions.ValidationError):
        body["message"] = getattr(exc, "summary", None) or "; ".join(_flatten(exc.detail)) or "invalid input"
        body["errors"] = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
    else:
        body["message"] = str(exc.detail)
    response.data = body
    return response


def json_error(status_code: int, code: str, message: str) -> JsonResponse:
    """The same error shape outside DRF views (URL not found, management port)."""
    return JsonResponse({"code": code, "message": message}, status=status_code)
