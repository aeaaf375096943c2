"""Login failure codes: one exception, a code, and what the operator should check.

The codes follow the brief's troubleshooting matrix where it names one (``invalid_grant``,
``invalid_client``, ``state_mismatch``, ``OIDC_CERT_ERR``, 503 when the IdP is down).
Protocol adapters raise ``LoginError(code)``; the view turns it into an audit event and an
error page that names the code, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorInfo:
    status: int
    title: str
    hint: str


CODES: dict[str, ErrorInfo] = {
    "idp_unknown": ErrorInfo(404, "Unknown identity provider",
                             "Check the link: no IdP with this name is configured."),
    "idp_disabled": ErrorInfo(403, "Identity provider disabled",
                              "An administrator disabled this IdP (`idp list`, `idp enable`)."),
    "protocol_unavailable": ErrorInfo(501, "Protocol not available",
                                      "This broker build has no adapter for the IdP's protocol."),
    "invalid_principal": ErrorInfo(400, "The IdP sent no usable identity",
                                   "The response carried no stable subject (e.g. only a transient "
                                   "NameID, or the configured subject attribute is missing)."),
    "unknown_user": ErrorInfo(403, "No account for this identity",
                              "Just-in-time provisioning is off for this IdP and no local user "
                              "is linked to this subject. Ask an administrator to link one."),
    "account_disabled": ErrorInfo(403, "Account disabled",
                                  "The local user linked to this identity is inactive."),
    "account_not_federated": ErrorInfo(403, "Account cannot use SSO",
                                       "This local account (e.g. break-glass) never logs in via SSO."),
    "state_mismatch": ErrorInfo(400, "State mismatch",
                                "CSRF protection failed or the login session was lost: the login "
                                "took too long, was replayed, or cookies are blocked. Inspect the "
                                "browser's cookies and start the login again."),
    "invalid_grant": ErrorInfo(400, "invalid_grant",
                               "The authorization code was expired or already used. Check the "
                               "IdP's logs and the clocks (NTP) of both sides."),
    "invalid_client": ErrorInfo(400, "invalid_client",
                                "Client authentication failed: the client_id/client_secret "
                                "configured here do not match the IdP's records."),
    "OIDC_CERT_ERR": ErrorInfo(502, "Untrusted certificate (OIDC_CERT_ERR)",
                               "The IdP's TLS certificate chain is not trusted: check the CA "
                               "bundle (`openssl verify -CAfile ca.pem idp.crt`)."),
    "idp_unavailable": ErrorInfo(503, "Identity provider unavailable",
                                 "The IdP's metadata, discovery or key endpoint is down and no "
                                 "usable copy is cached (`curl -I` the metadata URL)."),
    "token_not_yet_valid": ErrorInfo(400, "Token not yet valid",
                                     "Clock skew: compare `timedatectl status` on both sides."),
    "token_expired": ErrorInfo(400, "Token expired",
                               "Clock skew or a slow login: compare `timedatectl status` on both "
                               "sides and retry."),
    "invalid_signature": ErrorInfo(400, "Invalid signature",
                                   "The response's signature did not verify with the IdP's "
                                   "published keys (rotated keys? stale metadata/JWKS?)."),
    "backend_unavailable": ErrorInfo(503, "Service temporarily unavailable",
                                     "The broker's database or Redis did not answer; see /readyz."),
    "admin_forbidden": ErrorInfo(403, "No admin access",
                                 "You are signed in, but the roles your IdP grants do not include "
                                 "administration. Ask for the group mapped to an admin role."),
    "login_failed": ErrorInfo(400, "Login failed", "See the audit log entry for this request ID."),
    # --- OpenID Connect -------------------------------------------------------------------
    "oidc_error": ErrorInfo(400, "The OpenID Provider returned an error",
                            "The provider refused the request (see the audit event's detail)."),
    "oidc_algorithm": ErrorInfo(400, "Token algorithm refused",
                                "The token's alg is not on this provider's allow-list (never "
                                "`none`; HS* only when configured)."),
    "oidc_issuer": ErrorInfo(400, "Token issuer mismatch",
                             "The ID token's iss is not exactly the configured issuer."),
    "oidc_audience": ErrorInfo(400, "Token audience mismatch",
                               "The ID token is not for this client (aud/azp)."),
    "oidc_claims": ErrorInfo(400, "Token claims missing",
                             "The ID token lacks a required claim (iss, aud, exp, iat, sub)."),
    "oidc_nonce": ErrorInfo(400, "Nonce mismatch",
                            "The ID token's nonce is not the one sent for this login (replay?)."),
    "oidc_userinfo_mismatch": ErrorInfo(400, "Userinfo subject mismatch",
                                        "The userinfo endpoint answered for another subject."),
    "oidc_discovery_mismatch": ErrorInfo(503, "Provider discovery mismatch",
                                         "The discovery document names another issuer than the "
                                         "one configured: the provider is refused."),
    "oidc_mixup": ErrorInfo(400, "Provider mix-up",
                            "The callback claims to come from another provider than the one "
                            "this login was started with (RFC 9207)."),
    "oidc_pkce": ErrorInfo(400, "PKCE verifier missing",
                           "No PKCE verifier is stored for this login; start again."),
    # --- SAML ---------------------------------------------------------------------------
    "idp_metadata_expired": ErrorInfo(503, "IdP metadata expired",
                                      "The IdP's metadata is past its validUntil: run "
                                      "`manage.py idp refresh SLUG` or check the metadata URL."),
    "saml_malformed": ErrorInfo(400, "Malformed SAML response",
                                "The response is not valid SAML (encoding, XML or schema)."),
    "saml_doctype": ErrorInfo(400, "SAML response refused",
                              "The response declares a DOCTYPE or entities; these are never accepted."),
    "saml_too_large": ErrorInfo(413, "SAML message too large",
                                "The POST body exceeds SAML_MAX_POST_BYTES."),
    "saml_unsolicited": ErrorInfo(400, "Unsolicited SAML response",
                                  "IdP-initiated login is not enabled for this IdP; start the login "
                                  "from the portal instead."),
    "saml_in_response_to": ErrorInfo(400, "SAML response does not match a pending login",
                                     "The response answers a request this browser did not send to "
                                     "this IdP (or one that expired)."),
    "saml_replay": ErrorInfo(400, "SAML assertion replayed",
                             "This assertion was already used. Start a new login."),
    "saml_audience": ErrorInfo(400, "SAML audience mismatch",
                               "The assertion is not for this SP: check the SP entity ID the IdP "
                               "has registered (see our metadata)."),
    "saml_destination": ErrorInfo(400, "SAML destination mismatch",
                                  "Destination/Recipient is not this SP's ACS URL: check BASE_URL and "
                                  "the ACS URL registered at the IdP."),
    "saml_issuer": ErrorInfo(400, "SAML issuer mismatch",
                             "The response was issued by another entity than this IdP."),
    "saml_subject_confirmation": ErrorInfo(400, "SAML subject confirmation failed",
                                           "No valid bearer SubjectConfirmation for this SP."),
    "saml_weak_algorithm": ErrorInfo(400, "Weak SAML algorithm refused",
                                     "SHA-1, RSA-1_5 or 3DES used by an IdP not marked legacy."),
    "saml_assertion_count": ErrorInfo(400, "SAML response must hold exactly one assertion",
                                      "The response carried none or several assertions."),
    "saml_unsigned": ErrorInfo(400, "SAML assertion not signed",
                               "Neither the Response nor the Assertion carries a valid signature."),
    "saml_decrypt": ErrorInfo(400, "SAML decryption failed",
                              "The encrypted assertion could not be decrypted with our keys: check "
                              "the encryption certificate the IdP has for us."),
    "saml_status": ErrorInfo(400, "The IdP refused the login",
                             "The IdP returned a non-success SAML status (see the audit event)."),
}


class LoginError(Exception):
    """A login failed for a reason the user and the operator can act on."""

    def __init__(self, code: str, detail: str = "", *, status: int | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unregistered login error code {code!r}")
        self.code = code
        self.detail = detail
        self.info = CODES[code]
        self.status = status or self.info.status
        super().__init__(f"{code}: {detail}" if detail else code)


def register(code: str, status: int, title: str, hint: str) -> None:
    """Protocol adapters register their own specific codes at import time."""
    CODES.setdefault(code, ErrorInfo(status, title, hint))
