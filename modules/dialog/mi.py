"""The dialog module's MI listings and dlg_end_dlg, in OpenSIPS 3.4's shapes (dialog:list, dialog:list_ctx,
dialog:end_dlg); profile_get_size and profile_list_dlgs are profiles.py's."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from routescript.core.module import MIError, mi_command

from .byes import parse_extra_headers
from .core import Dialog

if TYPE_CHECKING:
    from .module import DialogModule


def mi_dialog(dlg: Dialog, with_ctx: bool) -> dict[str, Any]:
    """One dialog as OpenSIPS's MI prints it (with its values and profiles for list_ctx)."""
    def date(ts: float | None) -> str | None:
        if ts is None:
            return None
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))

    out: dict[str, Any] = {"ID": dlg.dlg_id, "db_id": str(dlg.db_id), "state": int(dlg.state),
                           "user_flags": str(dlg.flags & 0xFFFF),
                           "timestart": int(dlg.start) if dlg.start else 0}
    if dlg.start:
        out["datestart"] = date(dlg.start)
    out["timeout"] = int(dlg.deadline) if dlg.deadline and dlg.start else 0
    if dlg.deadline and dlg.start:
        out["dateout"] = date(dlg.deadline)
    out.update({"callid": dlg.call_id, "from_uri": dlg.from_uri, "to_uri": dlg.to_uri,
                "caller_tag": dlg.from_tag, "caller_contact": dlg.caller_contact or "",
                "callee_cseq": str(dlg.callee_cseq), "caller_route_set": ",".join(dlg.caller_route),
                "caller_bind_addr": dlg.caller_socket})
    callees = []
    if dlg.to_tag is not None:
        callees.append({"callee_tag": dlg.to_tag, "callee_contact": dlg.callee_contact or "",
                        "caller_cseq": str(dlg.caller_cseq),
                        "callee_route_set": ",".join(dlg.callee_route),
                        "callee_bind_addr": dlg.callee_socket or None})
    out["CALLEES"] = callees
    if with_ctx:
        out["context"] = {"values": [{k: v} for k, v in dlg.values.items()],
                          "profiles": [{name: value or ""} for name, value in dlg.profiles]}
    return out


class DialogMI:
    """dlg_list, dlg_list_ctx and dlg_end_dlg over the owner's table."""

    def __init__(self, owner: DialogModule) -> None:
        self.owner = owner

    def _list(self, callid: str | None, from_tag: str | None, index: int | None, counter: int | None,
              with_ctx: bool) -> dict[str, Any]:
        table = self.owner.table
        if from_tag is not None and callid is None:
            raise MIError("from_tag needs callid", -32602)
        if callid is not None:
            dialogs = [d for d in table.by_callid(callid) if from_tag is None or d.from_tag == from_tag]
        else:
            dialogs = list(table)
            if index is not None:
                start = int(index)
                if start < 0 or (counter is not None and int(counter) <= 0):
                    raise MIError("Invalid index or counter", -32602)
                dialogs = dialogs[start:start + int(counter)] if counter is not None else dialogs[start:]
        return {"Dialogs": [mi_dialog(d, with_ctx) for d in dialogs]}

    @mi_command("dlg_list", aliases=("dialog:list",), optional=("callid", "from_tag", "index", "counter"),
                recipes=((), ("callid",), ("callid", "from_tag"), ("index", "counter")), workers="concat",
                doc="the dialogs (OpenSIPS dialog:list)")
    def mi_dlg_list(self, callid: str | None = None, from_tag: str | None = None, index: Any = None,
                    counter: Any = None) -> dict[str, Any]:
        return self._list(callid, from_tag, index, counter, False)

    @mi_command("dlg_list_ctx", aliases=("dialog:list_ctx",),
                optional=("callid", "from_tag", "index", "counter"),
                recipes=((), ("callid",), ("callid", "from_tag"), ("index", "counter")), workers="concat",
                doc="the dialogs with their values and profiles (OpenSIPS dialog:list_ctx)")
    def mi_dlg_list_ctx(self, callid: str | None = None, from_tag: str | None = None, index: Any = None,
                        counter: Any = None) -> dict[str, Any]:
        return self._list(callid, from_tag, index, counter, True)

    @mi_command("dlg_end_dlg", aliases=("dialog:end_dlg",), optional=("extra_hdrs",), workers="concat",
                doc="end a dialog by its ID or Call-ID (BYEs both ways when confirmed)")
    def mi_dlg_end_dlg(self, dialog_id: str, extra_hdrs: str | None = None) -> list[dict[str, str]]:
        """The dialogs ended, [{"ID", "callid"}]: one, or none when no worker holds it (with workers the
        command runs in each and the answers are joined, so "not found" is an empty list, not an error)."""
        table = self.owner.table
        dlg = table.get(dialog_id)
        if dlg is None:
            found = table.by_callid(dialog_id)
            dlg = found[0] if found else None
        if dlg is None:
            return []
        if extra_hdrs:
            try:
                parse_extra_headers(extra_hdrs)
            except ValueError as exc:
                raise MIError(str(exc), -32602) from None
        self.owner.end_dialog(dlg, extra_hdrs)
        return [{"ID": dlg.dlg_id, "callid": dlg.call_id}]
