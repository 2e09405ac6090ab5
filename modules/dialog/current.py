"""The dialog of the message being handled: where the module keeps it in ctx.extra (create_dialog() or
the in-dialog match put it there) and how every part of the module reads it."""

from __future__ import annotations

import logging
from typing import Any

from routescript.script.context import BRANCH_ROUTE, FAILURE_ROUTE, ONREPLY_ROUTE, REQUEST_ROUTE

from .core import Dialog

log = logging.getLogger("routescript.dialog")

DLG_KEY = "dialog.dlg"        # ctx.extra: the Dialog of the message (created or matched)
DIR_KEY = "dialog.dir"        # ctx.extra: "downstream" / "upstream" for a matched request
CSEQ_OK_KEY = "dialog.cseq_ok"  # ctx.extra: the matched request's CSeq was above the last of its side
ANY_ROUTE = (REQUEST_ROUTE, BRANCH_ROUTE, ONREPLY_ROUTE, FAILURE_ROUTE)


def current_dialog(ctx: Any) -> Dialog | None:
    extra = getattr(ctx, "extra", None)
    return extra.get(DLG_KEY) if extra is not None else None


def need_dialog(ctx: Any, what: str) -> Dialog | None:
    """The message's dialog; None logged as the script's mistake (`what` needs one)."""
    dlg = current_dialog(ctx)
    if dlg is None:
        log.error("%s: no dialog for this message (create_dialog() or match_dialog() first)", what)
    return dlg
