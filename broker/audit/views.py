"""The auditor's export over HTTP: same filters and format as ``audit export`` (JSONL only: the
manifest is the stream's last line). Needs ``broker.export_auditevent``; audited before any byte
leaves. Mounted in the admin (``/admin/broker/auditevent/export/``); the Admin API can route to
``export_view`` too.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from . import export

EXPORT_PERMISSION = "broker.export_auditevent"


@require_GET
def export_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not user.is_authenticated:
        return JsonResponse({"error": "authentication required"}, status=401)
    if not user.is_active or not user.has_perm(EXPORT_PERMISSION):
        return JsonResponse({"error": "the audit export needs the auditor role"}, status=403)
    since, until = export.parse_when(request.GET.get("since")), export.parse_when(request.GET.get("until"))
    if since is None or until is None:
        return JsonResponse({"error": "since and until are required (ISO date or date-time)"}, status=400)
    fmt = request.GET.get("format", "jsonl")
    if fmt != "jsonl":
        return JsonResponse({"error": "over HTTP the format is jsonl (CSV: manage.py audit export)"},
                            status=400)
    filters = export.Filters(since=since, until=until, action=request.GET.get("action", ""),
                             actor=request.GET.get("actor", ""), idp=request.GET.get("idp", ""))
    try:
        prepared = export.prepare(filters, fmt, actor=user.get_username(), destination="http")
    except export.ExportError as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    response = StreamingHttpResponse(prepared.chunks(), content_type="application/x-ndjson")
    name = f"audit-{since:%Y%m%d}-{until:%Y%m%d}.jsonl"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    response["X-Audit-Export-Id"] = prepared.export_id
    return response
