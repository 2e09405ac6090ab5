"""The lark grammar (grammar/routescript.lark, LALR, contextual lexer), built once per process, and the
route keywords and limits the parser's parts share."""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from importlib import resources

import lark

from .context import (BRANCH_ROUTE, ERROR_ROUTE, EVENT_ROUTE, FAILURE_ROUTE, LOCAL_ROUTE, ONREPLY_ROUTE,
                      REQUEST_ROUTE, STARTUP_ROUTE, TIMER_ROUTE)

ROUTE_KINDS = {
    "route": REQUEST_ROUTE, "request_route": REQUEST_ROUTE, "onreply_route": ONREPLY_ROUTE,
    "failure_route": FAILURE_ROUTE, "branch_route": BRANCH_ROUTE, "local_route": LOCAL_ROUTE,
    "startup_route": STARTUP_ROUTE, "timer_route": TIMER_ROUTE, "event_route": EVENT_ROUTE,
    "error_route": ERROR_ROUTE,
}
# The keyword of each kind, for messages.
ROUTE_KEYWORD = {REQUEST_ROUTE: "route", ONREPLY_ROUTE: "onreply_route", FAILURE_ROUTE: "failure_route",
                 BRANCH_ROUTE: "branch_route", LOCAL_ROUTE: "local_route", STARTUP_ROUTE: "startup_route",
                 TIMER_ROUTE: "timer_route", EVENT_ROUTE: "event_route", ERROR_ROUTE: "error_route"}

MAX_ERRORS = 50
MAX_INCLUDE_DEPTH = 16
MAX_FILE_SIZE = 8 * 1024 * 1024  # bound what we read: a configuration is a few hundred KB at most

@functools.cache
def _lark() -> lark.Lark:
    """The LALR parser, built once (the grammar is compiled on first use)."""
    grammar = resources.files("routescript.grammar").joinpath("routescript.lark").read_text()
    return lark.Lark(grammar, parser="lalr", lexer="contextual", start=["start", "stmt_list"],
                     propagate_positions=True, maybe_placeholders=True,
                     lexer_callbacks={"SKIPPED_CHAR": _on_skipped})


# Characters OpenSIPS's lexer skips (SKIPPED_CHAR in the grammar) are ignored tokens; lark still calls
# this for each, and the parse running in this context collects them to warn (collect_skipped).
_skipped: contextvars.ContextVar[list[lark.Token] | None] = contextvars.ContextVar("skipped", default=None)


def _on_skipped(tok: lark.Token) -> lark.Token:
    sink = _skipped.get()
    if sink is not None:
        sink.append(tok)
    return tok


@contextlib.contextmanager
def collect_skipped() -> Iterator[list[lark.Token]]:
    """The skipped characters of the parse run inside the `with` (the parser is shared, so per context)."""
    sink: list[lark.Token] = []
    reset = _skipped.set(sink)
    try:
        yield sink
    finally:
        _skipped.reset(reset)


def skipped_warning(ch: str) -> str:
    shown = ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
    return f"stray character '{shown}' skipped (OpenSIPS's lexer ignores it too); remove it"


def route_label(kind: str, name: str | None) -> str:
    kw = ROUTE_KEYWORD.get(kind, kind)
    return f"{kw}[{name}]" if name is not None else kw
