"""Walk events in order and name what is wrong with the chain. Pure: no Django.

Used for the database (``verify``) and for an export file (``offline``). Each event is a dict
with ``LINE_FIELDS`` (time as the canonical string). The walker checks, per event:

* its own hash: ``hash == SHA-256(canonical(event) || prev_hash)``; when that fails it looks
  whether the event hashes correctly at a nearby seq (it was *reordered*) or not at all
  (*changed*);
* its position: seq increasing, and in a contiguous walk no gap (*missing*);
* the link: ``prev_hash`` equals the hash of seq - 1 (a self-consistent event that the next
  one does not chain to was *changed* and re-hashed);
* signed checkpoints: the hash at a checkpoint's seq is the one it signed (*rewritten*).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .canonical import ExportDigest, event_body, event_hash, is_hash
from .report import CHANGED, MISSING, REORDERED, REWRITTEN, Problem, Report

WINDOW = 1024  # recent hashes kept for link checks (memory stays flat)
REORDER_SEARCH = 64  # how far from its position a reordered event is looked for


class Walker:
    def __init__(self, report: Report, *, contiguous: bool, checkpoints: dict[int, tuple[str,
                                                                                         str]] | None = None,
                 first_prev_hash: tuple[int, str] | None = None, start: int | None = None,
                 what: str = "event") -> None:
        self.report = report
        self.contiguous = contiguous
        self.checkpoints = checkpoints or {}  # seq -> (head hash, label)
        self.first_prev_hash = first_prev_hash  # (seq, prev_hash) the walk must start with
        self.what = what
        self.recent: OrderedDict[int, str] = OrderedDict()
        self.awaiting: OrderedDict[int, tuple[str,
                                              int | None]] = OrderedDict()  # seq -> (child's prev_hash, line)
        self.max_seq: int | None = start - 1 if start is not None else None  # a walk that must begin at start
        self.count = 0
        self.first: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        self.digest = ExportDigest()
        self.checked_checkpoints: set[int] = set()
        self.missing_single: dict[int, Problem] = {}  # a one-seq gap, in case the seq shows up later

    def _where(self, line: int | None) -> str:
        return f"line {line}: " if line is not None else ""

    def feed(self, ev: dict[str, Any], line: int | None = None) -> None:
        rep, where = self.report, self._where(line)
        if len(self.missing_single) > WINDOW:
            self.missing_single.clear()
        seq, hash_, prev = ev.get("seq"), ev.get("hash"), ev.get("prev_hash")
        if not isinstance(seq, int) or isinstance(seq, bool) or not is_hash(hash_) or not is_hash(prev):
            rep.add(CHANGED, f"{where}malformed {self.what} (seq, hash or prev_hash unreadable)",
                    seq=seq if isinstance(seq, int) else None, line=line)
            return
        self.count += 1
        self.digest.add(seq, hash_)
        if self.first is None:
            self.first = {"seq": seq, "prev_hash": prev, "hash": hash_}
        self.last = {"seq": seq, "hash": hash_}

        # position
        if self.max_seq is not None and seq <= self.max_seq:
            kind = "duplicate" if seq in self.recent else "comes after"
            self._cancel_missing(seq)
            rep.add(REORDERED, f"{where}seq {seq} {kind} seq {self.max_seq}: {self.what}s out of order",
                    seq=seq, line=line)
        elif self.contiguous and self.max_seq is not None and seq != self.max_seq + 1:
            gap = (self.max_seq + 1, seq - 1)
            span = f"seq {gap[0]}" if gap[0] == gap[1] else f"seq {gap[0]}..{gap[1]}"
            after = f"seq {seq} follows seq {self.max_seq}" if self.count > 1 else f"the first is seq {seq}"
            rep.add(MISSING, f"{where}{span} missing ({after})", seq=gap[0], line=line)
            if gap[0] == gap[1] and rep.problems and rep.problems[-1].seq == gap[0]:
                self.missing_single[gap[0]] = rep.problems[-1]
        self.max_seq = seq if self.max_seq is None else max(self.max_seq, seq)

        # own hash
        body = event_body(ev)
        if event_hash(body, prev) != hash_:
            sealed_at = self._sealed_at(body, prev, hash_, seq)
            if sealed_at is not None:
                rep.add(REORDERED, f"{where}the {self.what} at seq {seq} (id {ev.get('id')}) was sealed as "
                                   f"seq {sealed_at}", seq=seq, line=line)
            else:
                rep.add(CHANGED, f"{where}the {self.what} (id {ev.get('id')}) does not match its hash",
                        seq=seq, line=line)
        else:
            self._check_link(seq, prev, line)
        # a later event that chained to this one
        waiting = self.awaiting.pop(seq, None)
        if waiting is not None and waiting[0] != hash_:
            rep.add(CHANGED, f"{self._where(waiting[1])}seq {seq + 1} chains to another hash than the one "
                             f"of seq {seq}", seq=seq, line=line)
        self.recent[seq] = hash_
        if len(self.recent) > WINDOW:
            self.recent.popitem(last=False)

        signed = self.checkpoints.get(seq)
        if signed is not None:
            self.checked_checkpoints.add(seq)
            if signed[0] != hash_:
                rep.add(REWRITTEN, f"{where}{signed[1]} signed head {signed[0][:16]}... at seq {seq}, the "
                                   f"chain has {hash_[:16]}...", seq=seq, line=line)

    def _check_link(self, seq: int, prev: str, line: int | None) -> None:
        rep = self.report
        if seq - 1 in self.recent:
            if self.recent[seq - 1] != prev and self.contiguous:
                rep.add(CHANGED, f"{self._where(line)}seq {seq} chains to another hash than the one of "
                                 f"seq {seq - 1} (seq {seq - 1} was edited and re-hashed)", seq=seq - 1,
                                 line=line)
        elif self.first_prev_hash is not None and seq == self.first_prev_hash[0]:
            if prev != self.first_prev_hash[1]:
                rep.add(CHANGED, f"{self._where(line)}seq {seq} chains to {prev[:16]}..., expected "
                                 f"{self.first_prev_hash[1][:16]}...", seq=seq, line=line)
        elif self.contiguous:
            self.awaiting[seq - 1] = (prev, line)
            if len(self.awaiting) > WINDOW:
                self.awaiting.popitem(last=False)

    def _sealed_at(self, body: dict[str, Any], prev: str, hash_: str, seq: int) -> int | None:
        if len(self.report.problems) >= 20:
            return None  # enough detail; keep a badly broken walk fast
        for delta in range(1, REORDER_SEARCH + 1):
            for other in (seq - delta, seq + delta):
                if other > 0 and event_hash({**body, "seq": other}, prev) == hash_:
                    return other
        return None

    def _cancel_missing(self, seq: int) -> None:
        """A "missing" seq that shows up later was reordered, not dropped: keep one problem."""
        problem = self.missing_single.pop(seq, None)
        if problem is not None and problem in self.report.problems:
            self.report.problems.remove(problem)
