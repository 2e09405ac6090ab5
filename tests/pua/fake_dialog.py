"""A small fake of the dialog module's API (/work/wt/dialog-api.md, modules/dialog/api.py): DialogInfo
snapshots, the callbacks fired synchronously as the real module does, values and flags. `current(ctx)`
makes the dialog of an INVITE it has not seen (as create_dialog() would have); tests then drive the
states with `change`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from routescript.modules.pua_dialoginfo._dialog import DlgState


@dataclass(frozen=True, slots=True)
class DialogInfo:
    dlg_id: str
    call_id: str
    from_uri: str
    from_tag: str
    to_uri: str
    to_tag: str | None
    req_uri: str
    caller_contact: str | None
    callee_contact: str | None
    state: DlgState
    created: float
    start: float | None = None
    end: float | None = None
    end_reason: str | None = None
    values: Mapping[str, str] = field(default_factory=dict)
    flags: int = 0


class FakeDialogApi:
    def __init__(self) -> None:
        self._created: list[Callable[[DialogInfo, Any], None]] = []
        self._changed: list[Callable[[DialogInfo, DlgState, DlgState, Any], None]] = []
        self._loaded: list[Callable[[DialogInfo], None]] = []
        self.dlgs: dict[str, DialogInfo] = {}
        self._next = 1

    # --- the API ---------------------------------------------------------------------------------
    def on_created(self, cb: Callable[[DialogInfo, Any], None]) -> None:
        self._created.append(cb)

    def on_state_changed(self, cb: Callable[[DialogInfo, DlgState, DlgState, Any], None]) -> None:
        self._changed.append(cb)

    def on_loaded(self, cb: Callable[[DialogInfo], None]) -> None:
        self._loaded.append(cb)

    def current(self, ctx: Any) -> DialogInfo | None:
        msg = ctx.msg
        for dlg in self.dlgs.values():
            if dlg.call_id == msg.call_id:
                return dlg
        if getattr(msg, "method", None) != "INVITE":
            return None
        contact = msg.contacts[0].uri if msg.contacts else None
        dlg = DialogInfo(f"{self._next}:{self._next * 7}", msg.call_id, str(msg.from_.uri),
                         msg.from_.tag or "", str(msg.to.uri), None, str(msg.uri),
                         str(contact) if contact else None, None,
                         DlgState.UNCONFIRMED, time.time())
        self._next += 1
        self.dlgs[dlg.dlg_id] = dlg
        for cb in self._created:
            cb(dlg, ctx)
        return dlg

    def set_flag(self, dlg_id: str, flag: int) -> None:
        dlg = self.dlgs[dlg_id]
        self.dlgs[dlg_id] = replace(dlg, flags=dlg.flags | flag)

    def store_value(self, dlg_id: str, name: str, value: str) -> None:
        dlg = self.dlgs[dlg_id]
        self.dlgs[dlg_id] = replace(dlg, values={**dlg.values, name: value})

    def fetch_value(self, dlg_id: str, name: str) -> str | None:
        return self.dlgs[dlg_id].values.get(name)

    def dialogs(self) -> Iterable[DialogInfo]:
        return list(self.dlgs.values())

    # --- driving -----------------------------------------------------------------------------------
    def add(self, dlg: DialogInfo) -> None:
        self.dlgs[dlg.dlg_id] = dlg

    def change(self, dlg_id: str, new: DlgState, **fields: Any) -> DialogInfo:
        old = self.dlgs[dlg_id]
        dlg = replace(old, state=new, **fields)
        if new == DlgState.DELETED:
            del self.dlgs[dlg_id]
        else:
            self.dlgs[dlg_id] = dlg
        for cb in self._changed:
            cb(dlg, old.state, new, None)
        return dlg

    def restart(self, dlg: DialogInfo) -> None:
        """As after a restart: the dialog reloaded from the table, DLGCB_LOADED fired."""
        self.dlgs[dlg.dlg_id] = dlg
        for cb in self._loaded:
            cb(dlg)
