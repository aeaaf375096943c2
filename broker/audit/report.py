"""What ``audit verify`` found: problems named by sequence number and kind. No Django."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Kinds, worst news first in the wording operators see.
CHANGED = "changed"  # an event's content or hash was edited
MISSING = "missing"  # a sequence number is absent (deleted row, dropped line)
REORDERED = "reordered"  # an event sits at another position than the one it was sealed at
TRUNCATED = "truncated"  # events after a signed checkpoint are gone
REWRITTEN = "rewritten"  # the chain differs from what a checkpoint signed
SIGNATURE = "signature"  # a checkpoint or manifest signature does not verify
CHECKPOINT = "checkpoint"  # the checkpoint records disagree (sink vs database)
FORMAT = "format"  # unreadable input, wrong key, protection missing
MAX_PROBLEMS = 100


@dataclass
class Problem:
    kind: str
    detail: str
    seq: int | None = None
    line: int | None = None

    def text(self) -> str:
        where = f"seq {self.seq}: " if self.seq is not None else ""
        return f"{where}{self.kind}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "detail": self.detail, "line": self.line}


@dataclass
class Report:
    subject: str  # "database" or the export's path
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    dropped: int = 0  # problems beyond MAX_PROBLEMS, counted only

    @property
    def ok(self) -> bool:
        return not self.problems and not self.dropped

    def add(self, kind: str, detail: str, *, seq: int | None = None, line: int | None = None) -> None:
        if seq is not None and any(p.seq == seq for p in self.problems[-8:]):
            return  # one problem per sequence number is enough
        if len(self.problems) >= MAX_PROBLEMS:
            self.dropped += 1
            return
        self.problems.append(Problem(kind, detail, seq, line))

    def first(self) -> Problem | None:
        """The first bad sequence number (problems without one come after)."""
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: (p.seq is None, p.seq or 0))

    def ordered(self) -> list[Problem]:
        return sorted(self.problems, key=lambda p: (p.seq is None, p.seq or 0))

    def text(self) -> str:
        out = []
        if self.ok:
            out.append(f"OK: {self.subject}: " + ", ".join(f"{k} {v}" for k, v in self.summary.items()))
        else:
            first = self.first()
            where = f"first bad seq {first.seq}" if first.seq is not None else "problem"
            out.append(f"FAILED: {self.subject}: {where}: {first.kind}: {first.detail}")
            for problem in self.ordered():
                out.append(f"  - {problem.text()}")
            if self.dropped:
                out.append(f"  ... and {self.dropped} more")
            if self.summary:
                out.append("  (" + ", ".join(f"{k} {v}" for k, v in self.summary.items()) + ")")
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        first = self.first()
        return {"ok": self.ok, "subject": self.subject, "first_bad_seq": first.seq if first else None,
                "problems": [p.as_dict() for p in self.ordered()], "more_problems": self.dropped,
                "warnings": self.warnings, "summary": self.summary}
