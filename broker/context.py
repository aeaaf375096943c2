"""Who is acting, from where, under which request ID: set once per request or command.

Audit events and log lines read these instead of threading a request through every call.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class ActionContext:
    actor: str = ""
    source_ip: str | None = None
    request_id: str = ""


_current: contextvars.ContextVar[ActionContext] = contextvars.ContextVar(
    "broker_action_context", default=ActionContext()  # noqa: B039 (frozen dataclass)
)


def current() -> ActionContext:
    return _current.get()


@contextmanager
def acting(actor: str = "", source_ip: str | None = None, request_id: str = "") -> Iterator[None]:
    token = _current.set(ActionContext(actor=actor, source_ip=source_ip, request_id=request_id))
    try:
        yield
    finally:
        _current.reset(token)


def set_actor(actor: str) -> None:
    """Name the actor once it is known (after authentication) for the rest of the request."""
    ctx = _current.get()
    _current.set(ActionContext(actor=actor, source_ip=ctx.source_ip, request_id=ctx.request_id))
