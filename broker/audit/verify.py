"""``audit verify``: walk the chain in the database and check the signed checkpoints.

Checkpoints come from the database table and from the sink file outside it. Each signature is
checked with the public key named by its fingerprint. A checkpoint for this chain (same hash at
seq 1) whose seq lies beyond the database's head proves the tail was deleted (or the database
rolled back); one whose head hash differs from the chain's hash at that seq proves a rewrite; a
sink checkpoint missing from the table proves the table was edited.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction

from . import checkpoints, signing
from .canonical import GENESIS, checkpoint_line_statement
from .chain import seal, unsealed_count
from .report import CHECKPOINT, FORMAT, REWRITTEN, SIGNATURE, TRUNCATED, Report
from .rows import iter_sealed
from .setup import trigger_problems
from .walk import Walker


def _signature_ok(line: dict[str, Any], keys: dict[str, Any], report: Report, label: str) -> bool | None:
    key = keys.get(line.get("key"))
    if key is None:
        report.warnings.append(f"{label} (seq {line.get('seq')}) is signed by key {line.get('key')}, "
                               "which is not at hand (pass --public-key)")
        return None
    if not signing.verify(key, checkpoint_line_statement(line), str(line.get("signature", ""))):
        report.add(SIGNATURE, f"{label}: the signature does not verify (edited checkpoint)",
                   seq=line.get("seq"))
        return False
    return True


def verify_database(*, using: str = "default", sink: Path | None = None, public_keys: dict[str,
                                                                                           Any] | None = None,
                    seal_first: bool = True) -> Report:
    from broker.models import AuditEvent
    from broker.models.audit import AuditCheckpoint

    report = Report("database")
    if seal_first:
        seal(using)
    for problem in trigger_problems(using):
        report.add(FORMAT, problem)
    keys = dict(public_keys or {})
    sink = sink or checkpoints.sink_path()
    genesis = AuditEvent.objects.using(using).filter(seq=1).values_list("hash", flat=True).first()

    # The checkpoints: database rows and sink lines, each checked against its key.
    db_lines = [checkpoints.as_line(cp) for cp in AuditCheckpoint.objects.using(using).order_by("id")]
    sink_lines, unreadable = checkpoints.read_sink(sink)
    for text in unreadable:
        report.add(CHECKPOINT, text)
    in_db = {(line["seq"], line["signature"]) for line in db_lines}
    signed: dict[int, tuple[str, str]] = {}
    ours: list[tuple[dict[str, Any], str]] = []
    other_chains = 0
    for line, source in [*((x, "database") for x in db_lines), *((x, "sink") for x in sink_lines)]:
        label = f"checkpoint #{line.get('id')} ({source})"
        if _signature_ok(line, keys, report, label) is False:
            continue
        if genesis is not None and line["chain"] != genesis:  # seq 1 gone: cannot tell, take them all
            other_chains += 1
            continue
        ours.append((line, label))
        if source == "sink" and (line["seq"], line["signature"]) not in in_db:
            report.add(CHECKPOINT, f"{label} signed seq {line['seq']} but is missing from the database's "
                                   "checkpoint table (rows deleted)", seq=line["seq"])
        known = signed.setdefault(line["seq"], (line["head_hash"], label))
        if known[0] != line["head_hash"]:
            report.add(REWRITTEN, f"{label} and {known[1]} signed different heads at seq {line['seq']}",
                       seq=line["seq"])
    sink_sigs = {(line["seq"], line["signature"]) for line in sink_lines}
    not_in_sink = [x for x in db_lines if (x["seq"], x["signature"]) not in sink_sigs]
    if not_in_sink:
        report.warnings.append(f"{len(not_in_sink)} checkpoint(s) are in the database but not in the sink "
                               f"{sink} (another node's sink, or a failed sink write)")

    walker = Walker(report, contiguous=True, checkpoints=signed, first_prev_hash=(1, GENESIS), start=1)
    with transaction.atomic(using=using):  # plain server-side cursor, one snapshot
        for row in iter_sealed(using):
            walker.feed(row)
    head = walker.max_seq or 0

    beyond = sorted((line for line, _ in ours if line["seq"] > head), key=lambda x: x["seq"])
    if beyond:
        reached = [line for line, _ in ours if line["seq"] <= head]
        last_ok = max(reached, key=lambda x: x["seq"]) if reached else None
        after = (f"after checkpoint #{last_ok['id']} (seq {last_ok['seq']})" if last_ok
                 else "before any checkpoint")
        report.add(TRUNCATED, f"tail truncated {after}: the chain ends at seq {head} but checkpoint "
                              f"#{beyond[-1]['id']} signed seq {beyond[-1]['seq']} (events {head + 1}.."
                              f"{beyond[-1]['seq']} are gone)", seq=head + 1)
    if other_chains and not ours:
        report.add(REWRITTEN, f"none of the {other_chains} checkpoint(s) belongs to this chain (seq 1 hash "
                              f"{genesis[:16]}...): the chain was replaced, or the sink is another "
                              "database's", seq=1)
    elif other_chains:
        report.warnings.append(f"{other_chains} checkpoint(s) of other chains ignored (a sink shared by "
                               "several databases?)")
    if not ours:
        report.warnings.append("no signed checkpoint for this chain: a deleted tail cannot be detected "
                               "(run: manage.py audit checkpoint)")
    pending = unsealed_count(using)
    if pending:
        report.warnings.append(f"{pending} event(s) not sealed yet (transactions still committing)")
    report.summary = {"events": walker.count, "head seq": head,
                      "head hash": (walker.last or {}).get("hash", GENESIS)[:16] + "...",
                      "checkpoints checked": len(walker.checked_checkpoints), "sink": str(sink)}
    return report
