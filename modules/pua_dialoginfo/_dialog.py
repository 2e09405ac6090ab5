"""The dialog module's API as pua_dialoginfo uses it (the agreed contract: modules/dialog/api.py).

Looked up when the module loads, so this package loads (and is tested with a fake API) whether or not the
dialog module is installed; tests replace `bind_dialog` here.
"""

from __future__ import annotations

import enum
import importlib
from typing import Any

DLG_FLAG_PUA_DIALOGINFO = 1 << 16   # set by dialoginfo_set() (the contract's reserved flag)


class DlgState(enum.IntEnum):
    """OpenSIPS DLG_STATE_* as the dialog API numbers them ($DLG_status)."""

    UNCONFIRMED = 1
    EARLY = 2
    CONFIRMED_NA = 3
    CONFIRMED = 4
    DELETED = 5


def bind_dialog(server: Any) -> Any | None:
    """The dialog module's DialogApi for `server`, or None when dialog is not loaded (or not built)."""
    try:
        api = importlib.import_module("routescript.modules.dialog.api")
    except ImportError:
        return None
    return api.bind_dialog(server)


def same_values() -> bool:
    """Whether the dialog module's flag and states are the ones this package numbers (a guard test)."""
    api = importlib.import_module("routescript.modules.dialog.api")
    return bool(api.DLG_FLAG_PUA_DIALOGINFO == DLG_FLAG_PUA_DIALOGINFO
                and {s.name: int(s) for s in api.DlgState} == {s.name: int(s) for s in DlgState})
