"""Verify an audit export with nothing but the file and the public key: no database, no secret.

    python -m broker.audit.offline FILE --public-key audit.pub      (no Django needed)
    python manage.py audit verify --export FILE --public-key audit.pub

Checks the manifest's signature (and that it was made with this key), every line's bytes
(canonical JSON, so one changed byte shows), every event's hash, the order and, for an
unfiltered export, the links and the absence of gaps; then count, first/last and the signed
digest of all (seq, hash) pairs, so a filtered export also shows a dropped, added or
reordered line; and the signed checkpoints the manifest carries. Memory stays flat.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import signing
from .canonical import LINE_FIELDS, canonical_json, checkpoint_line_statement
from .report import CHANGED, CHECKPOINT, FORMAT, MISSING, SIGNATURE, TRUNCATED, Report
from .walk import Walker

EXPORT_FORMAT = "broker-audit-export/1"
TRAILER_PREFIX = b'{"manifest":'


class ExportUnreadable(Exception):
    pass


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def manifest_statement(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the manifest signature covers: the manifest without its signature."""
    return {k: v for k, v in manifest.items() if k != "signature"}


def _last_line(path: Path) -> tuple[bytes, int]:
    """(last line without its newline, offset where it starts), read from the end."""
    with path.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end:
            fh.seek(end - 1)
            if fh.read(1) == b"\n":
                end -= 1
        pos, buf = end, b""
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf  # covers [pos, end)
            cut = buf.rfind(b"\n")
            if cut >= 0:
                return buf[cut + 1:], pos + cut + 1
        return buf, 0


def load_manifest(path: Path, manifest_path: Path | None = None) -> tuple[dict[str, Any], int | None]:
    """(manifest, offset of a JSONL trailer or None when the manifest is a separate file)."""
    if manifest_path is None and sidecar(path).exists():
        manifest_path = sidecar(path)
    try:
        if manifest_path is not None:
            return json.loads(manifest_path.read_bytes())["manifest"], None
        last, offset = _last_line(path)
        if not last.startswith(TRAILER_PREFIX):
            raise ExportUnreadable(f"{path}: no manifest (the last line is not the manifest and there is no "
                                   f"{sidecar(path).name})")
        return json.loads(last)["manifest"], offset
    except OSError as exc:
        raise ExportUnreadable(f"cannot read {exc.filename}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportUnreadable(f"the manifest is unreadable: {exc}") from None


def _jsonl_events(path: Path, stop: int | None, report: Report) -> Iterator[tuple[dict[str, Any], int]]:
    offset = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if stop is not None and offset >= stop:
                return
            offset += len(raw)
            body = raw[:-1] if raw.endswith(b"\n") else raw
            if body.startswith(TRAILER_PREFIX):
                report.add(FORMAT, f"line {number}: a manifest line before the end of the file", line=number)
                continue
            try:
                event = json.loads(body)
            except ValueError:
                report.add(CHANGED, f"line {number}: not valid JSON (edited)", line=number)
                continue
            if not isinstance(event, dict) or set(event) != set(LINE_FIELDS):
                report.add(CHANGED, f"line {number}: not an exported event (fields differ)", line=number,
                           seq=event.get("seq") if isinstance(event, dict) else None)
                continue
            if canonical_json(event) != body:
                report.add(CHANGED, f"line {number}: not the bytes that were exported (edited)", line=number,
                           seq=event.get("seq") if isinstance(event.get("seq"), int) else None)
                continue
            yield event, number


class _Capture:
    """Feeds lines to csv.reader and remembers the raw text of the current record."""

    def __init__(self, fh) -> None:
        self.fh, self.raw = fh, []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.fh)
        self.raw.append(line)
        return line


def csv_row(event: dict[str, Any]) -> list[Any]:
    row = []
    for name in LINE_FIELDS:
        value = event[name]
        if name == "data":
            value = canonical_json(value).decode("utf-8")
        row.append("" if value is None else value)
    return row


def _csv_events(path: Path, report: Report) -> Iterator[tuple[dict[str, Any], int]]:
    with path.open("r", encoding="utf-8", newline="") as fh:
        capture = _Capture(fh)
        reader = csv.reader(capture, lineterminator="\n")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        line = 1
        for index, row in enumerate(reader):
            raw, capture.raw = "".join(capture.raw), []
            number, line = line, line + raw.count("\n")
            if index == 0:
                if row != list(LINE_FIELDS):
                    report.add(FORMAT, "line 1: not the export's CSV header", line=1)
                continue
            try:
                event = dict(zip(LINE_FIELDS, row, strict=True))
                event["id"], event["seq"] = int(event["id"]), int(event["seq"])
                event["source_ip"] = event["source_ip"] or None
                event["data"] = json.loads(event["data"])
            except ValueError:
                report.add(CHANGED, f"line {number}: not an exported event (edited)", line=number)
                continue
            out.seek(0)
            out.truncate()
            writer.writerow(csv_row(event))
            if out.getvalue() != raw:
                report.add(CHANGED, f"line {number}: not the bytes that were exported (edited)", line=number,
                           seq=event["seq"])
                continue
            yield event, number


def verify_export(path: Path, public_key, *, manifest_path: Path | None = None) -> Report:
    """Check an export (JSONL with its manifest as last line, or CSV with FILE.manifest.json)."""
    report = Report(str(path))
    manifest, trailer = load_manifest(path, manifest_path)
    fp = signing.fingerprint(public_key)
    if manifest.get("format") != EXPORT_FORMAT:
        report.add(FORMAT, f"unknown export format {manifest.get('format')!r}")
    if manifest.get("public_key_fingerprint") != fp:
        report.add(SIGNATURE, f"the export was signed with key {manifest.get('public_key_fingerprint')}, not "
                              f"with the given key {fp}")
    elif not signing.verify(public_key, manifest_statement(manifest), str(manifest.get("signature", ""))):
        report.add(SIGNATURE, "the manifest's signature does not verify: the manifest was edited")

    signed = _checkpoints(manifest, public_key, fp, report)
    contiguous = bool(manifest.get("contiguous"))
    first = manifest.get("first") or {}
    walker = Walker(report, contiguous=contiguous, checkpoints=signed, what="line",
                    first_prev_hash=(first["seq"], first["prev_hash"]) if first else None)
    events = _csv_events(path, report) if manifest.get("file_format") == "csv" else \
        _jsonl_events(path, trailer, report)
    filters = manifest.get("filters") or {}
    for event, number in events:
        for name in ("action", "actor", "idp"):
            if filters.get(name) and event[name] != filters[name]:
                report.add(CHANGED, f"line {number}: {name} {event[name]!r} is outside the export's filter",
                           seq=event["seq"], line=number)
        walker.feed(event, number)
    _compare(manifest, walker, report)
    report.summary = {"events": walker.count, "first seq": (walker.first or {}).get("seq"),
                      "last seq": (walker.last or {}).get("seq"),
                      "checkpoints checked": len(walker.checked_checkpoints), "key": fp}
    return report


def _checkpoints(manifest: dict[str, Any], public_key, fp: str, report: Report) -> dict[int, tuple[str, str]]:
    signed: dict[int, tuple[str, str]] = {}
    lines = list(manifest.get("checkpoints") or [])
    if manifest.get("checkpoint"):
        lines.append(manifest["checkpoint"])
    for line in lines:
        label = f"checkpoint #{line.get('id')}"
        try:
            statement = checkpoint_line_statement(line)
        except (KeyError, TypeError):
            report.add(CHECKPOINT, f"{label} is unreadable")
            continue
        if line["key"] != fp:
            report.warnings.append(f"{label} (seq {line['seq']}) was signed by another key ({line['key']})")
            continue
        if not signing.verify(public_key, statement, str(line.get("signature", ""))):
            report.add(SIGNATURE, f"{label} (seq {line['seq']}): signature does not verify", seq=line["seq"])
            continue
        signed[line["seq"]] = (line["head_hash"], label)
    return signed


def _compare(manifest: dict[str, Any], walker: Walker, report: Report) -> None:
    """Count, ends, digest and coverage against the (signed) manifest."""
    count = manifest.get("count")
    if walker.count != count:
        kind = MISSING if isinstance(count, int) and walker.count < count else CHANGED
        report.add(kind, f"the file holds {walker.count} events, the manifest says {count}")
    if walker.digest.hexdigest() != manifest.get("digest"):
        report.add(CHANGED,
                   "the digest of (seq, hash) in file order differs from the signed manifest: a line "
                            "was dropped, added, edited or reordered")
    first, last = manifest.get("first") or {}, manifest.get("last") or {}
    seq_range = manifest.get("range") or {}
    if walker.first and first and walker.first["seq"] != first.get("seq"):
        report.add(MISSING,
                   f"the file starts at seq {walker.first['seq']}, the manifest at seq {first.get('seq')}",
                   seq=first.get("seq"))
    if walker.last and last and walker.last["seq"] != last.get("seq"):
        if isinstance(last.get("seq"), int) and walker.last["seq"] < last["seq"]:
            report.add(TRUNCATED,
                       f"tail truncated: the file ends at seq {walker.last['seq']}, the manifest at "
                                  f"seq {last['seq']}", seq=walker.last["seq"] + 1)
        else:
            report.add(CHANGED,
                       f"the file ends at seq {walker.last['seq']}, the manifest at seq {last.get('seq')}")
    if manifest.get("contiguous") and walker.count and seq_range:
        if walker.max_seq is not None and walker.max_seq < seq_range.get("last_seq", 0):
            report.add(TRUNCATED, f"tail truncated: the export's range ends at seq {seq_range['last_seq']}",
                       seq=walker.max_seq + 1)
    cp = manifest.get("checkpoint")
    if walker.count and cp and isinstance(last.get("seq"), int) and cp.get("seq", 0) < last["seq"]:
        report.add(CHECKPOINT, f"checkpoint #{cp.get('id')} (seq {cp.get('seq')}) does not cover the export")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker.audit.offline",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--public-key", type=Path, required=True, help="PEM public key (audit keygen's .pub)")
    parser.add_argument("--manifest", type=Path,
                        help="the manifest file (default: trailer or FILE.manifest.json)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = verify_export(args.export, signing.load_public(args.public_key), manifest_path=args.manifest)
    except (ExportUnreadable, signing.SigningKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
