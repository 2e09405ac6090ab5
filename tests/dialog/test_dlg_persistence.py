"""The dialog table's rows: a dialog written and read back, OpenSIPS's name#type#value lists with their
escapes, and rows that cannot be dialogs (refused with BadRow, which the module logs and skips)."""

from __future__ import annotations

from typing import Any

import pytest

from routescript.modules.dialog.api import DlgState
from routescript.modules.dialog.core import BYE_ON_TIMEOUT, DialogTable, DlgEvent
from routescript.modules.dialog.persistence import BadRow, dialog_of, read_pairs, row_of, write_pairs


def confirmed() -> Any:
    table = DialogTable()
    dlg = table.create(call_id="c@h", from_uri="sip:a@x", from_tag="ft", to_uri="sip:b@x", req_uri="sip:b@x",
                       from_header="<sip:a@x>;tag=ft", to_header="<sip:b@x>", now=1000.0, timeout=60)
    dlg.to_tag, dlg.caller_contact, dlg.callee_contact = "tt", "sip:a@1.2.3.4", "sip:b@5.6.7.8"
    dlg.caller_route = ("<sip:p1;lr>", "<sip:p2;lr>")
    dlg.caller_socket = "udp:127.0.0.1:5060"
    dlg.caller_cseq, dlg.callee_cseq = 7, 3
    dlg.values = {"a|b": "x#y\\z", "n": "1"}
    dlg.create_flags = BYE_ON_TIMEOUT
    dlg.flags = 1 << 16
    table.link(dlg, "caller", "alice")
    table.link(dlg, "inbound", None)
    table.event(dlg, DlgEvent.RPL2XX, 1010.0)
    return dlg


def test_a_dialog_round_trips() -> None:
    dlg = confirmed()
    row = row_of(dlg)
    assert row["dlg_id"] == dlg.db_id and row["timeout"] == 1070 and row["state"] == 3
    assert row["caller_cseq"] == "7" and row["caller_route_set"] == "<sip:p1;lr>,<sip:p2;lr>"
    back, warnings = dialog_of(row, {"caller"}, {"inbound"})
    assert warnings == []
    assert back.dlg_id == dlg.dlg_id and back.state is DlgState.CONFIRMED_NA and back.deadline == 1070.0
    assert back.values == dlg.values and back.profiles == [("caller", "alice"), ("inbound", None)]
    assert back.caller_route == dlg.caller_route and back.callee_contact == "sip:b@5.6.7.8"
    assert back.create_flags == BYE_ON_TIMEOUT and back.flags == 1 << 16
    assert (back.caller_cseq, back.callee_cseq) == (7, 3)


def test_an_undeclared_profile_is_dropped_with_a_warning() -> None:
    back, warnings = dialog_of(row_of(confirmed()), set(), {"inbound"})
    assert back.profiles == [("inbound", None)] and "'caller'" in warnings[0]


def test_pairs_escape_as_opensips() -> None:
    text = write_pairs([("a|b", "x#y\\z"), ("n", "")])
    assert text == "a\\|b#1#x\\#y\\\\z|n#1#|"
    assert read_pairs(text) == [("a|b", "x#y\\z"), ("n", "")]
    assert read_pairs("k#2#5|") == [("k", "5")]      # an integer value (type 2) reads as its text


@pytest.mark.parametrize("text", ["a#1#b", "a#b|", "a#9#b|", "a#1#b#c|"])
def test_bad_pairs(text: str) -> None:
    with pytest.raises(BadRow):
        read_pairs(text)


@pytest.mark.parametrize(("column", "value"), [("caller_cseq", "abc"), ("state", 1), ("state", 9),
                                               ("to_tag", ""), ("vars", b"a#1#b"), ("dlg_id", "x"),
                                               ("start_time", None), ("vars", b"\xff\xfe")])
def test_rows_that_are_no_dialog(column: str, value: object) -> None:
    row = row_of(confirmed())
    row[column] = value
    with pytest.raises(BadRow):
        dialog_of(row, {"caller"}, {"inbound"})
