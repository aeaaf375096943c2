"""Client secret rotation without downtime (the brief's Admin Desk).

The provider holds two secrets during a rotation; so do we (as references). The token
exchange tries the primary and, on ``invalid_client``, the secondary once, and audits
which one worked (``backend.get_token``).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from broker import audit
from broker.models import IdentityProvider

from .provider import SecretUnavailable, read_secret


def rotate(idp: IdentityProvider, *, secondary_env: str = "", secondary_file: str = "",
           promote: bool = False, retire: bool = False, actor: str | None = None,
           via: str = "cli") -> str:
    if idp.protocol != IdentityProvider.Protocol.OIDC:
        raise ValidationError(f"{idp.slug} is not an OpenID Provider")
    cfg = dict(idp.config)
    before = {k: cfg.get(k, "") for k in ("client_secret_env", "client_secret_file",
                                          "client_secret_secondary_env", "client_secret_secondary_file")}
    if secondary_env or secondary_file:
        try:
            read_secret(secondary_env, secondary_file)  # refuse a reference that resolves to nothing
        except SecretUnavailable as exc:
            raise ValidationError(str(exc)) from exc
        cfg["client_secret_secondary_env"] = secondary_env
        cfg["client_secret_secondary_file"] = secondary_file
        stage, message = "secondary_set", f"{idp.slug}: secondary secret set; logins retry with it."
    elif promote:
        if not (cfg.get("client_secret_secondary_env") or cfg.get("client_secret_secondary_file")):
            raise ValidationError("no secondary secret to promote")
        cfg["client_secret_env"] = cfg.pop("client_secret_secondary_env", "")
        cfg["client_secret_file"] = cfg.pop("client_secret_secondary_file", "")
        stage, message = "promoted", f"{idp.slug}: secondary promoted to primary; revoke the old one."
    elif retire:
        cfg.pop("client_secret_secondary_env", None)
        cfg.pop("client_secret_secondary_file", None)
        stage, message = "retired", f"{idp.slug}: secondary secret forgotten."
    else:
        raise ValidationError("nothing to do")
    after = {k: cfg.get(k, "") for k in before}
    with transaction.atomic():
        idp.config = cfg
        idp.save(update_fields=["config", "updated_at"])
        # References (variable names, file paths) only: never the secret values.
        audit.record("idp.secret_rotated", actor=actor, via=via, idp=idp.slug, reason=stage,
                     before=before, after=after)
    return message
