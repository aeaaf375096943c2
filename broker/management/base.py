"""Base for the broker's CLI: one command, several subcommands, every change audited."""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from broker import context
from broker.services.lookup import IdpNotFound, RoleNotFound

# Exit codes: 1 unexpected failure, 2 refused (bad input, missing object; nothing changed).
EXIT_REFUSED = 2


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"cli:{user}"


class SubcommandCommand(BaseCommand):
    """Dispatches ``manage.py <cmd> <sub> ...`` to ``handle_<sub>``."""

    def add_subcommands(self, subparsers) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def add_arguments(self, parser) -> None:
        subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
        self.add_subcommands(subparsers)

    def handle(self, *args: Any, **options: Any) -> None:
        sub = options["subcommand"].replace("-", "_")
        actor = cli_actor()
        with context.acting(actor=actor):
            try:
                getattr(self, f"handle_{sub}")(actor=actor, **options)
            except (RoleNotFound, IdpNotFound) as exc:
                raise CommandError(str(exc), returncode=EXIT_REFUSED) from exc
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages), returncode=EXIT_REFUSED) from exc

    def print_json(self, value: Any) -> None:
        self.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str))

    @staticmethod
    def table(rows: list[list[str]], headers: list[str]) -> str:
        widths = [len(h) for h in headers]
        for row in rows:
            widths = [max(w, len(str(c))) for w, c in zip(widths, row, strict=False)]
        line = "  ".join(f"{{:{w}}}" for w in widths)
        out = [line.format(*headers), line.format(*["-" * w for w in widths])]
        out += [line.format(*[str(c) for c in row]) for row in rows]
        return "\n".join(s.rstrip() for s in out)
