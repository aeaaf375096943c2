"""WebAuthn security keys for break-glass accounts (py_webauthn does the verification).

Registration happens on the one-time enrolment page; assertions on the login's second step.
Challenges are stored in the database (enrolment row) or in the break-glass database
session, never in Redis.
"""

from __future__ import annotations

import json
from typing import Any

import webauthn
from django.conf import settings
from django.utils import timezone
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from broker.models import BreakGlassAccount, BreakGlassSecurityKey

RP_NAME = "API Portal SSO (break-glass)"


class SecurityKeyError(Exception):
    """The browser's credential did not verify."""


def _descriptors(account: BreakGlassAccount) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(id=bytes(key.credential_id))
        for key in account.keys.all()
    ]


def registration_options(account: BreakGlassAccount) -> tuple[dict[str, Any], bytes]:
    """Options for ``navigator.credentials.create()`` (JSON-ready) and their challenge."""
    options = webauthn.generate_registration_options(
        rp_id=settings.BREAKGLASS_WEBAUTHN_RP_ID,
        rp_name=RP_NAME,
        user_id=bytes(account.webauthn_user_id),
        user_name=account.name,
        user_display_name=f"{account.name} (break-glass)",
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=_descriptors(account),
    )
    return json.loads(webauthn.options_to_json(options)), options.challenge


def register(account: BreakGlassAccount, credential: str | dict, challenge: bytes) -> BreakGlassSecurityKey:
    try:
        data = json.loads(credential) if isinstance(credential, str) else credential
        if not isinstance(data, dict):
            raise TypeError("credential is not a JSON object")
        verified = webauthn.verify_registration_response(
            credential=data,
            expected_challenge=challenge,
            expected_rp_id=settings.BREAKGLASS_WEBAUTHN_RP_ID,
            expected_origin=settings.BREAKGLASS_WEBAUTHN_ORIGIN,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise SecurityKeyError(type(exc).__name__) from exc
    raw = (data.get("response") or {}).get("transports") or []
    transports = [t for t in raw if isinstance(t, str)][:8] if isinstance(raw, list) else []
    cred_b64 = bytes_to_base64url(verified.credential_id)
    if BreakGlassSecurityKey.objects.filter(credential_id_b64=cred_b64).exists():
        raise SecurityKeyError("credential already registered")
    return BreakGlassSecurityKey.objects.create(
        account=account,
        credential_id=verified.credential_id,
        credential_id_b64=cred_b64,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=str(verified.aaguid or ""),
        transports=transports,
    )


def authentication_options(account: BreakGlassAccount) -> tuple[dict[str, Any], bytes]:
    """Options for ``navigator.credentials.get()`` limited to the account's keys."""
    options = webauthn.generate_authentication_options(
        rp_id=settings.BREAKGLASS_WEBAUTHN_RP_ID,
        allow_credentials=_descriptors(account),
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return json.loads(webauthn.options_to_json(options)), options.challenge


def verify_assertion(account: BreakGlassAccount, credential: str | dict,
                     challenge: bytes) -> BreakGlassSecurityKey:
    """Verify an assertion by one of the account's keys; updates its signature counter."""
    try:
        data = json.loads(credential) if isinstance(credential, str) else credential
        cred_id = str(data["rawId"] if "rawId" in data else data["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SecurityKeyError("malformed credential") from exc
    key = account.keys.filter(credential_id_b64=cred_id.rstrip("=")).first()
    if key is None:
        raise SecurityKeyError("unknown credential")
    try:
        verified = webauthn.verify_authentication_response(
            credential=data,
            expected_challenge=challenge,
            expected_rp_id=settings.BREAKGLASS_WEBAUTHN_RP_ID,
            expected_origin=settings.BREAKGLASS_WEBAUTHN_ORIGIN,
            credential_public_key=bytes(key.public_key),
            credential_current_sign_count=key.sign_count,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise SecurityKeyError(type(exc).__name__) from exc
    key.sign_count = verified.new_sign_count
    key.last_used_at = timezone.now()
    key.save(update_fields=["sign_count", "last_used_at"])
    return key
