"""The dialog table (OpenSIPS 3.4's `dialog`, version 12): rows from dialogs, dialogs from rows.

Pure functions; writeback.py owns the database handle and when it writes (db_mode), module.py the loading.

What is stored, as OpenSIPS does: confirmed dialogs only (state 3 or 4); `timeout` is the absolute
expiry (unix seconds); `vars` and `profiles` are OpenSIPS's "name#type#value|" lists ('|', '#' and '\\'
escaped by '\\'; type 1 a string, 2 an integer; a profile's type is 1 and its value empty when it has
none). Ours: `flags` holds create_dialog()'s flags (bye-on-timeout: 1), `module_flags` the dialog's
DLG_FLAG_* bits and set_dlg_flag() flags; `script_flags` stays NULL.
"""

from __future__ import annotations

from typing import Any

from routescript.sip import ParseError, split_values

from .api import DlgState
from .core import Dialog

TABLE = "dialog"


class BadRow(ValueError):
    """A row that cannot be a dialog (logged and skipped at start)."""


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("#", "\\#")


def write_pairs(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"{_escape(name)}#1#{_escape(value)}|" for name, value in pairs)


def read_pairs(text: str) -> list[tuple[str, str]]:
    """OpenSIPS's "name#type#value|" list back; BadRow when it is not one."""
    out: list[tuple[str, str]] = []
    fields: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
            continue
        if c == "#":
            fields.append("".join(current))
            current = []
        elif c == "|":
            fields.append("".join(current))
            current = []
            if len(fields) != 3 or fields[1] not in ("1", "2"):
                raise BadRow(f"bad name#type#value item {'#'.join(fields)!r}")
            out.append((fields[0], fields[2]))
            fields = []
        else:
            current.append(c)
        i += 1
    if fields or current:
        raise BadRow("unterminated name#type#value list")
    return out


def row_of(dlg: Dialog) -> dict[str, Any]:
    return {
        "dlg_id": dlg.db_id, "callid": dlg.call_id, "from_uri": dlg.from_uri, "from_tag": dlg.from_tag,
        "to_uri": dlg.to_uri, "to_tag": dlg.to_tag or "", "caller_cseq": str(dlg.caller_cseq),
        "callee_cseq": str(dlg.callee_cseq), "caller_ping_cseq": 0, "callee_ping_cseq": 0,
        "caller_route_set": ",".join(dlg.caller_route) or None,
        "callee_route_set": ",".join(dlg.callee_route) or None,
        "caller_contact": dlg.caller_contact, "callee_contact": dlg.callee_contact,
        "caller_sock": dlg.caller_socket, "callee_sock": dlg.callee_socket or dlg.caller_socket,
        "state": int(dlg.state), "start_time": int(dlg.start or dlg.created),
        "timeout": int(dlg.deadline) if dlg.deadline is not None else 0,
        "vars": write_pairs(sorted(dlg.values.items())).encode() or None,
        "profiles": write_pairs([(name, value or "") for name, value in dlg.profiles]) or None,
        "module_flags": dlg.flags, "flags": dlg.create_flags,
    }


def dialog_of(row: dict[str, Any], with_value: set[str], no_value: set[str]) -> tuple[Dialog, list[str]]:
    """The Dialog of a row and the warnings about it (an undeclared profile is dropped); BadRow when the
    row cannot be a live dialog."""
    warnings: list[str] = []
    try:
        db_id = int(row["dlg_id"])
        state = DlgState(int(row["state"]))
        call_id, from_tag, to_tag = str(row["callid"]), str(row["from_tag"]), str(row["to_tag"] or "")
        from_uri, to_uri = str(row["from_uri"]), str(row["to_uri"])
        caller_cseq, callee_cseq = int(row["caller_cseq"]), int(row["callee_cseq"])
        start, timeout = int(row["start_time"]), int(row["timeout"])
        raw_vars = row.get("vars") or b""
        values = read_pairs(raw_vars.decode() if isinstance(raw_vars, bytes) else str(raw_vars))
        profiles = read_pairs(str(row.get("profiles") or ""))
        caller_route = tuple(split_values(str(row.get("caller_route_set") or "")))
        callee_route = tuple(split_values(str(row.get("callee_route_set") or "")))
    except BadRow:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, ParseError) as exc:
        raise BadRow(str(exc) or type(exc).__name__) from None
    if state not in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED):
        raise BadRow(f"state {int(state)}: only confirmed dialogs are stored")
    if not call_id or not from_tag or not to_tag or db_id <= 0:
        raise BadRow("no Call-ID, tags or id")
    dlg = Dialog(h_entry=db_id >> 32, h_id=db_id & 0xFFFFFFFF, call_id=call_id, from_uri=from_uri,
                 from_tag=from_tag, to_uri=to_uri, req_uri=to_uri, from_header=f"<{from_uri}>;tag={from_tag}",
                 to_header=f"<{to_uri}>", created=float(start), timeout=max(1, timeout - start))
    dlg.to_tag = to_tag
    dlg.state = state
    dlg.start = float(start)
    dlg.deadline = float(timeout)
    dlg.caller_cseq, dlg.callee_cseq, dlg.invite_cseq = caller_cseq, callee_cseq, caller_cseq
    dlg.caller_route, dlg.callee_route = caller_route, callee_route
    dlg.caller_contact = row.get("caller_contact") or None
    dlg.callee_contact = row.get("callee_contact") or None
    dlg.caller_socket = str(row.get("caller_sock") or "")
    dlg.callee_socket = str(row.get("callee_sock") or "")
    dlg.values = dict(values)
    dlg.flags = int(row.get("module_flags") or 0)
    dlg.create_flags = int(row.get("flags") or 0)
    for name, value in profiles:
        if name in with_value:
            dlg.profiles.append((name, value))
        elif name in no_value:
            dlg.profiles.append((name, None))
        else:
            warnings.append(f"profile {name!r} is not declared any more: dropped")
    dlg.db_dirty = False
    dlg.db_stored = True
    return dlg, warnings
