"""The dialog module's Python API (OpenSIPS's dlg_load.h / dlg_cb.h for Python consumers).

The contract agreed between dialog, pua_dialoginfo and acc (/work/wt/dialog-api.md, documented in
docs/modules/dialog.md): consumers call `bind_dialog(server)` from their check()/start() and register
callbacks; they see immutable `DialogInfo` snapshots (a new one after every change), never the live
dialog. Callbacks run synchronously on the event loop, must not block, and never raise into the dialog
module: an exception is logged and the next callback runs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["DLG_FLAG_ACC_CDR", "DLG_FLAG_PUA_DIALOGINFO", "DialogApi", "DialogCallback", "DialogInfo",
           "DlgState", "bind_dialog"]

DLG_FLAG_PUA_DIALOGINFO = 1 << 16   # set by pua_dialoginfo's dialoginfo_set()
DLG_FLAG_ACC_CDR = 1 << 17          # set by acc's do_accounting(..., "cdr")


class DlgState(enum.IntEnum):
    """OpenSIPS's DLG_STATE_* (dlg_hash.h): the values $DLG_status prints."""

    UNCONFIRMED = 1    # the initial INVITE went out, no reply with a To tag yet
    EARLY = 2          # a 1xx with a To tag
    CONFIRMED_NA = 3   # a 2xx, not ACKed yet
    CONFIRMED = 4      # the ACK of the 2xx came
    DELETED = 5        # ended (BYE, failure, CANCEL, timeout, MI)


@dataclass(frozen=True, slots=True)
class DialogInfo:
    """A snapshot of one dialog; a new one after every change."""

    dlg_id: str                   # "<h_entry>:<h_id>" as $DLG_id prints it (unique per server)
    call_id: str
    from_uri: str                 # the caller
    from_tag: str
    to_uri: str                   # the callee
    to_tag: str | None            # once a reply with a tag came
    req_uri: str                  # R-URI of the initial INVITE as it arrived
    caller_contact: str | None
    callee_contact: str | None
    state: DlgState
    created: float                # time.time() at create_dialog()
    start: float | None           # time.time() when confirmed (2xx)
    end: float | None             # when DELETED
    end_reason: str | None        # "bye-caller", "bye-callee", "timeout", "failed:<code>", "cancelled"
    values: Mapping[str, str]     # $dlg_val(name) / store_dlg_value
    flags: int                    # script/module flags (DLG_FLAG_*)


class DialogCallback(Protocol):
    """DLGCB_STATE_CHANGED: `ctx` is the MsgContext of the request/reply that caused the change (None
    for timeouts, MI and restarts)."""

    def __call__(self, dlg: DialogInfo, old: DlgState, new: DlgState, ctx: Any | None) -> None: ...


class DialogApi:
    """What bind_dialog() returns. The dialog module implements `_DialogBackend`; this class only
    forwards to it so consumers see a small, stable surface."""

    __slots__ = ("_backend",)

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def on_created(self, cb: Callable[[DialogInfo, Any], None]) -> None:
        """DLGCB_CREATED: cb(dialog, ctx of the initial INVITE) after create_dialog()."""
        self._backend.callbacks.created.append(cb)

    def on_state_changed(self, cb: DialogCallback) -> None:
        """DLGCB_STATE_CHANGED: cb(dialog, old, new, ctx) after every state change."""
        self._backend.callbacks.state_changed.append(cb)

    def on_loaded(self, cb: Callable[[DialogInfo], None]) -> None:
        """DLGCB_LOADED: cb(dialog) for each dialog loaded back from the database at start."""
        self._backend.callbacks.loaded.append(cb)

    def current(self, ctx: Any) -> DialogInfo | None:
        """The dialog of the message being handled (created or matched), or None."""
        result: DialogInfo | None = self._backend.current_info(ctx)
        return result

    def create(self, ctx: Any) -> DialogInfo | None:
        """create_dialog() for the initial INVITE of `ctx` when it has no dialog yet (acc's cdr flag, as
        OpenSIPS's create_acc_dlg); the dialog, or None (logged) when the request cannot start one."""
        if self._backend.current_info(ctx) is None and self._backend.create(ctx) < 0:
            return None
        result: DialogInfo | None = self._backend.current_info(ctx)
        return result

    def set_flag(self, dlg_id: str, flag: int) -> None:
        """Set module flag bits on a live dialog (KeyError-free: an unknown id is logged and ignored)."""
        self._backend.set_flag(dlg_id, flag)

    def store_value(self, dlg_id: str, name: str, value: str) -> None:
        self._backend.store_value(dlg_id, name, value)

    def fetch_value(self, dlg_id: str, name: str) -> str | None:
        result: str | None = self._backend.fetch_value(dlg_id, name)
        return result

    def dialogs(self) -> Iterable[DialogInfo]:
        """The live dialogs of this worker (snapshots)."""
        result: Iterable[DialogInfo] = self._backend.infos()
        return result


def bind_dialog(server: Any) -> DialogApi | None:
    """OpenSIPS's load_dlg_api: the API of the server's dialog module, None when it is not loaded."""
    modules = getattr(server, "modules", None)
    module = modules.get("dialog") if modules is not None else None
    api = getattr(module, "api", None)
    return api if isinstance(api, DialogApi) else None
