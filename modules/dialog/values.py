"""A dialog's values and flags as the script sees them: store_dlg_value / fetch_dlg_value / $dlg_val(name)
and set_dlg_flag / reset_dlg_flag / is_dlg_flag_set (flags 0-15, OpenSIPS's user flags)."""

from __future__ import annotations

import logging
from typing import Any

from routescript.core.module import Arg, pseudo_variable, script_function
from routescript.script.context import MsgContext

from .core import MAX_VALUE_LEN, MAX_VALUES, Dialog
from .current import ANY_ROUTE, current_dialog, need_dialog
from .writeback import TableWriter

log = logging.getLogger("routescript.dialog")


class DialogValues:
    """Values and flags of the message's dialog; every change marks its row for the writer."""

    def __init__(self, writer: TableWriter) -> None:
        self.writer = writer

    def store(self, dlg: Dialog, name: str, value: str) -> bool:
        """The value kept (False, logged, over MAX_VALUES values or MAX_VALUE_LEN characters)."""
        if name not in dlg.values and len(dlg.values) >= MAX_VALUES:
            log.error("dialog %s (Call-ID %s): more than %d values", dlg.dlg_id, dlg.call_id, MAX_VALUES)
            return False
        if len(value) > MAX_VALUE_LEN:
            log.error("dialog %s (Call-ID %s): value %s longer than %d", dlg.dlg_id, dlg.call_id, name,
                      MAX_VALUE_LEN)
            return False
        dlg.values[name] = value
        dlg.db_dirty = True
        self.writer.mark(dlg)
        return True

    @script_function("store_dlg_value", Arg("str", "name"), Arg("str", "val"), routes=ANY_ROUTE)
    def store_dlg_value(self, ctx: MsgContext, name: str, value: str) -> int:
        dlg = need_dialog(ctx, "store_dlg_value")
        if dlg is None:
            return -1
        return 1 if self.store(dlg, name, value) else -1

    @script_function("fetch_dlg_value", Arg("str", "name"), Arg("pvar", "val"), routes=ANY_ROUTE)
    def fetch_dlg_value(self, ctx: MsgContext, name: str, var: Any) -> int:
        dlg = need_dialog(ctx, "fetch_dlg_value")
        if dlg is None or name not in dlg.values:
            return -1
        var.set(ctx, dlg.values[name])
        return 1

    @pseudo_variable("dlg_val", key="name", setter="set_dlg_val")
    def pv_dlg_val(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        dlg = current_dialog(ctx)
        return dlg.values.get(str(key)) if dlg is not None else None

    def set_dlg_val(self, ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
        dlg = need_dialog(ctx, "$dlg_val")
        if dlg is None:
            return
        if value is None:
            dlg.values.pop(str(key), None)
            return
        self.store(dlg, str(key), str(value))

    @script_function("set_dlg_flag", Arg("int", "flag"), routes=ANY_ROUTE)
    def set_dlg_flag(self, ctx: MsgContext, flag: int) -> int:
        dlg = need_dialog(ctx, "set_dlg_flag")
        if dlg is None or not 0 <= flag < 16:
            return -1
        dlg.flags |= 1 << flag
        self.writer.mark(dlg)
        return 1

    @script_function("reset_dlg_flag", Arg("int", "flag"), routes=ANY_ROUTE)
    def reset_dlg_flag(self, ctx: MsgContext, flag: int) -> int:
        dlg = need_dialog(ctx, "reset_dlg_flag")
        if dlg is None or not 0 <= flag < 16:
            return -1
        dlg.flags &= ~(1 << flag)
        self.writer.mark(dlg)
        return 1

    @script_function("is_dlg_flag_set", Arg("int", "flag"), routes=ANY_ROUTE)
    def is_dlg_flag_set(self, ctx: MsgContext, flag: int) -> int:
        dlg = current_dialog(ctx)
        return 1 if dlg is not None and 0 <= flag < 16 and dlg.flags & (1 << flag) else -1
