"""The break-glass pages: /breakglass/ (password), /breakglass/verify/ (second factor),
/breakglass/logout/, /breakglass/enroll/<secret>/ (register a security key).

Thin HTTP layer over ``broker.breakglass.auth`` / ``accounts`` / ``security_keys``.

Sessions: these views never use the main (Redis) session. The password step opens a
break-glass *database* session under its own cookie (see ``broker.breakglass.sessions`` for
why and how); the second step turns it into the logged-in session. With every IdP down
and Redis down, this path still works: it needs only PostgreSQL.
"""

from __future__ import annotations

import time
from base64 import urlsafe_b64decode, urlsafe_b64encode

from django.conf import settings
from django.contrib.auth import logout
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from broker import audit
from broker.breakglass import accounts, auth, security_keys, sessions
from broker.middleware import client_ip
from broker.models import BreakGlassAccount
from broker.redirects import safe_next

DEFAULT_NEXT = "/admin/"


def _b64(data: bytes) -> str:
    return urlsafe_b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return urlsafe_b64decode(text.encode())


def _pending(request: HttpRequest) -> dict | None:
    if not sessions.is_active(request):
        return None
    pending = request.session.get(sessions.PENDING)
    if not pending or time.time() - pending.get("at", 0) > settings.BREAKGLASS_PENDING_TTL:
        return None
    return pending


@never_cache
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    next_url = safe_next(request.POST.get("next") or request.GET.get("next"), default=DEFAULT_NEXT)
    ctx = {"next": next_url, "signed_in_as": sessions.account_name(request)}
    if request.method == "GET":
        return render(request, "breakglass/login.html", ctx)
    username = request.POST.get("username", "").strip()[:150]
    password = request.POST.get("password", "")
    drill = request.POST.get("drill") == "1"
    try:
        account = auth.password_step(username, password, client_ip(request))
    except auth.LoginRefused as exc:
        return render(request, "breakglass/login.html",
                      {**ctx, "error": exc.message, "username": username, "drill": drill}, status=exc.status)
    # A fresh database session for the half-way login (never the Redis one).
    if sessions.is_active(request):
        request.session.flush()
    else:
        sessions.activate(request)
    request.session[sessions.PENDING] = {
        "account_id": account.pk, "username": account.name, "at": int(time.time()),
        "drill": drill, "next": next_url,
    }
    request.session.set_expiry(settings.BREAKGLASS_PENDING_TTL)
    return redirect("breakglass:verify")


@never_cache
@require_http_methods(["GET", "POST"])
def verify_view(request: HttpRequest) -> HttpResponse:
    pending = _pending(request)
    if pending is None:
        return render(request, "breakglass/login.html", {
            "next": DEFAULT_NEXT,
            "error": "Your sign-in expired or was not started: enter the password again.",
        }, status=400)
    account = BreakGlassAccount.objects.select_related("user").filter(pk=pending["account_id"]).first()
    error = ""
    status = 200
    if request.method == "POST" and account is not None:
        challenge = pending.get("challenge")
        try:
            verified = auth.second_factor_step(
                pending["account_id"], pending["username"], client_ip(request),
                otp=request.POST.get("otp", "").strip()[:16],
                assertion=request.POST.get("assertion", "")[:20000],
                challenge=_unb64(challenge) if challenge else None,
            )
        except auth.LoginRefused as exc:
            error, status = exc.message, exc.status
        else:
            if pending.get("drill"):
                auth.finish_drill(request, verified)
                return render(request, "breakglass/drill_done.html", {"account": verified.account.name,
                                                                       "factor": verified.factor})
            auth.finish_login(request, verified)
            return redirect(safe_next(pending.get("next"), default=DEFAULT_NEXT))
    options = None
    if account is not None and account.keys.exists():
        options, challenge = security_keys.authentication_options(account)
        pending["challenge"] = _b64(challenge)
        request.session[sessions.PENDING] = pending
    return render(request, "breakglass/verify.html", {
        "account": pending["username"],
        "webauthn_options": options,
        "has_totp": account is not None and accounts.totp_device(account.user) is not None,
        "drill": pending.get("drill", False),
        "error": error,
    }, status=status)


@never_cache
@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    name = sessions.account_name(request)
    if name:
        logout(request)  # flushes the break-glass database session
        audit.record("breakglass.logout", actor=name, account=name, via=request.path)
        request.breakglass_logout_audited = True  # type: ignore[attr-defined]
    return redirect("breakglass:login")


def _enroll_invalid(request: HttpRequest, reason: str) -> HttpResponse:
    audit.record("breakglass.enrollment_failed", outcome="failure", actor="", reason=reason)
    return render(request, "breakglass/enroll.html", {
        "invalid": True,
    }, status=404 if reason == "link_invalid" else 400)


@never_cache
@require_http_methods(["GET", "POST"])
def enroll_view(request: HttpRequest, secret: str) -> HttpResponse:
    enrollment = accounts.find_enrollment(secret)
    if enrollment is None:
        return _enroll_invalid(request, "link_invalid")
    account = enrollment.account
    if request.method == "POST":
        credential = request.POST.get("credential", "")[:20000]
        if not enrollment.challenge or not credential:
            return _enroll_invalid(request, "no_challenge")
        try:
            with transaction.atomic():
                key = security_keys.register(account, credential, bytes(enrollment.challenge))
                enrollment.used_at = timezone.now()
                enrollment.challenge = None
                enrollment.save(update_fields=["used_at", "challenge"])
                audit.record("breakglass.webauthn_enrolled", actor=account.name, account=account.name,
                             aaguid=key.aaguid, credential=key.credential_id_b64[:16],
                             security_keys=account.keys.count())
        except security_keys.SecurityKeyError as exc:
            audit.record("breakglass.enrollment_failed", outcome="failure", actor=account.name,
                         reason="bad_credential", account=account.name, detail=str(exc)[:200])
            return render(request, "breakglass/enroll.html", {
                "account": account.name, "error": "The security key's response did not verify; "
                "reload the page and try again.",
            }, status=400)
        return render(request, "breakglass/enroll.html", {"account": account.name, "done": True})
    options, challenge = security_keys.registration_options(account)
    enrollment.challenge = challenge
    enrollment.save(update_fields=["challenge"])
    return render(request, "breakglass/enroll.html", {
        "account": account.name, "webauthn_options": options, "expires_at": enrollment.expires_at,
    })
