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
    "login_failed": ErrorInfo(400, "Login failed", "See the audit log entry for this request ID."),
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
