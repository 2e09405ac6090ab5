"""The $DLG_* pseudo-variables (OpenSIPS 3.4's names and values): status, lifetime, ids, direction,
count, flags, end reason and the writable $DLG_timeout. $dlg_val is values.py's."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from routescript.core.module import pseudo_variable
from routescript.script.context import MsgContext

from .api import DlgState
from .current import DIR_KEY, current_dialog, need_dialog

if TYPE_CHECKING:
    from .module import DialogModule

log = logging.getLogger("routescript.dialog")

END_REASONS = {   # DialogInfo.end_reason -> $DLG_end_reason (OpenSIPS's texts)
    "bye-caller": "Downstream BYE", "bye-callee": "Upstream BYE", "timeout": "Lifetime Timeout",
    "mi": "MI Termination"}


class DialogPVars:
    """$DLG_* of the message's dialog, over the owner's table and clock."""

    def __init__(self, owner: DialogModule) -> None:
        self.owner = owner

    @pseudo_variable("DLG_status")
    def pv_status(self, ctx: MsgContext, key: Any, index: Any) -> int | None:
        dlg = current_dialog(ctx)
        return int(dlg.state) if dlg is not None else None

    @pseudo_variable("DLG_lifetime")
    def pv_lifetime(self, ctx: MsgContext, key: Any, index: Any) -> int | None:
        dlg = current_dialog(ctx)
        if dlg is None:
            return None
        if dlg.start is None:
            return 0
        return int((dlg.end or self.owner.clock()) - dlg.start)

    @pseudo_variable("DLG_did")
    def pv_did(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        dlg = current_dialog(ctx)
        return dlg.dlg_id if dlg is not None else None

    @pseudo_variable("DLG_id")
    def pv_id(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self.pv_did(ctx, key, index)

    @pseudo_variable("DLG_dir")
    def pv_dir(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return ctx.extra.get(DIR_KEY) if current_dialog(ctx) is not None else None

    @pseudo_variable("DLG_count")
    def pv_count(self, ctx: MsgContext, key: Any, index: Any) -> int:
        return len(self.owner.table)

    @pseudo_variable("DLG_flags")
    def pv_flags(self, ctx: MsgContext, key: Any, index: Any) -> int | None:
        dlg = current_dialog(ctx)
        return dlg.flags & 0xFFFF if dlg is not None else None

    @pseudo_variable("DLG_end_reason")
    def pv_end_reason(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        dlg = current_dialog(ctx)
        if dlg is None or dlg.end_reason is None:
            return None
        return END_REASONS.get(dlg.end_reason)

    @pseudo_variable("DLG_timeout", setter="set_timeout")
    def pv_timeout(self, ctx: MsgContext, key: Any, index: Any) -> int | None:
        """Seconds until the dialog expires (its lifetime before the 2xx)."""
        dlg = current_dialog(ctx)
        if dlg is None:
            return None
        if dlg.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED) and dlg.deadline is not None:
            return max(0, int(dlg.deadline - self.owner.clock()))
        return dlg.timeout

    def set_timeout(self, ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
        dlg = need_dialog(ctx, "$DLG_timeout")
        if dlg is None:
            return
        try:
            seconds = int(value)
        except (TypeError, ValueError):
            log.error("$DLG_timeout = %r: not a number of seconds", value)
            return
        if seconds <= 0:
            log.error("$DLG_timeout = %d: must be positive", seconds)
            return
        owner = self.owner
        owner.table.set_timeout(dlg, seconds, owner.clock())
        owner.writer.mark(dlg)
        owner.rearm()
