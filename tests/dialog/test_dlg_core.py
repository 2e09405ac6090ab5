"""The sans-IO dialog core: the state table, matching, profiles, deadlines on a fake clock, the shared
profile counters, create_dialog's flags."""

from __future__ import annotations

import pytest

from routescript.modules.dialog.api import DlgState
from routescript.modules.dialog.core import (
    BYE_ON_TIMEOUT,
    TRANSITIONS,
    DialogLimitError,
    DialogTable,
    DlgEvent,
    parse_create_flags,
)
from routescript.modules.dialog.shared import SharedProfiles


def make(table: DialogTable, call_id: str = "c1", now: float = 1000.0, timeout: int = 60):  # type: ignore[no-untyped-def]
    return table.create(call_id=call_id, from_uri="sip:a@x", from_tag="ft", to_uri="sip:b@x",
                        req_uri="sip:b@x", from_header="<sip:a@x>;tag=ft", to_header="<sip:b@x>", now=now,
                        timeout=timeout)


@pytest.mark.parametrize(("events", "state"), [
    ([DlgEvent.RPL1XX], DlgState.EARLY),
    ([DlgEvent.RPL1XX, DlgEvent.RPL2XX], DlgState.CONFIRMED_NA),
    ([DlgEvent.RPL2XX, DlgEvent.ACK], DlgState.CONFIRMED),
    ([DlgEvent.RPL1XX, DlgEvent.RPLFAIL], DlgState.DELETED),
    ([DlgEvent.RPLFAIL], DlgState.DELETED),
    ([DlgEvent.RPL2XX, DlgEvent.ACK, DlgEvent.BYE], DlgState.DELETED),
    ([DlgEvent.RPL2XX, DlgEvent.BYE], DlgState.DELETED),
    ([DlgEvent.BYE], DlgState.UNCONFIRMED),                 # bogus: a BYE before the 2xx
    ([DlgEvent.RPL1XX, DlgEvent.ACK], DlgState.EARLY),      # bogus
    ([DlgEvent.RPL2XX, DlgEvent.ACK, DlgEvent.RPLFAIL], DlgState.CONFIRMED),   # bogus
    ([DlgEvent.RPL2XX, DlgEvent.TIMEOUT], DlgState.DELETED),
    ([DlgEvent.END], DlgState.DELETED),
])
def test_state_table(events: list[DlgEvent], state: DlgState) -> None:
    table = DialogTable()
    dlg = make(table)
    for event in events:
        table.event(dlg, event, 1001.0, reason="x")
    assert dlg.state is state


def test_deleted_is_final() -> None:
    assert not [key for key in TRANSITIONS if key[0] is DlgState.DELETED]


def test_lifetime_runs_from_the_2xx_on_a_fake_clock() -> None:
    table = DialogTable()
    dlg = make(table, timeout=30)
    change = table.event(dlg, DlgEvent.RPL2XX, 1010.0)
    assert change is not None and change.old is DlgState.UNCONFIRMED and dlg.start == 1010.0
    assert table.next_deadline() == 1040.0
    assert table.due(1039.9) == [] and table.due(1040.0) == [dlg]
    table.set_timeout(dlg, 5, 1020.0)
    assert table.next_deadline() == 1025.0
    change = table.event(dlg, DlgEvent.TIMEOUT, 1025.0, reason="timeout")
    assert change is not None and dlg.end == 1025.0 and dlg.end_reason == "timeout" and dlg.deadline is None


def test_matching_by_tags_and_direction() -> None:
    table = DialogTable()
    dlg = make(table)
    assert table.match("c1", "ft", None) == (dlg, "downstream")
    dlg.to_tag = "tt"
    assert table.match("c1", "ft", "tt") == (dlg, "downstream")
    assert table.match("c1", "tt", "ft") == (dlg, "upstream")
    assert table.match("c1", "ft", "other") is None
    assert table.match("c2", "ft", "tt") is None
    assert table.by_did(dlg.did) is dlg and table.by_did("zz.1") is None


def test_profiles_count_and_removal() -> None:
    table = DialogTable()
    one, two = make(table, "c1"), make(table, "c2")
    assert one.dlg_id != two.dlg_id
    table.link(one, "caller", "alice")
    table.link(two, "caller", "alice")
    table.link(two, "caller", "bob")
    table.link(one, "inbound", None)
    assert table.profile_size("caller", "alice") == 2 and table.profile_size("caller", None) == 3
    assert table.unlink(two, "caller", None)      # every value (3.4)
    assert table.profile_size("caller", None) == 1
    table.remove(one)
    assert table.profile_size("caller", "alice") == 0 and table.profile_size("inbound", None) == 0
    assert table.profile_counts == {}


def test_ids_are_unique_per_worker_slot_and_bounded() -> None:
    a, b = DialogTable(id_base=0, id_step=2, max_dialogs=2), DialogTable(id_base=1, id_step=2)
    ids = {make(a, "x").h_id, make(a, "y").h_id, make(b, "x").h_id, make(b, "y").h_id}
    assert len(ids) == 4
    with pytest.raises(DialogLimitError):
        make(a, "z")


def test_shared_profiles_count_other_workers() -> None:
    shared = SharedProfiles(3)
    shared.add(1, "caller", "alice", 1)
    shared.add(2, "caller", "alice", 1)
    shared.add(2, "caller", "bob", 1)
    assert shared.others(0, "caller", "alice") == 2
    assert shared.others(1, "caller", "alice") == 1
    assert shared.others(0, "caller", None) == 3
    shared.add(2, "caller", "alice", -1)
    shared.clear(1)
    assert shared.others(0, "caller", "alice") == 0 and shared.others(0, "caller", "bob") == 1


def test_table_feeds_the_shared_counters() -> None:
    shared = SharedProfiles(2)
    table = DialogTable(id_base=1, id_step=2)
    table.count_hook = lambda p, v, d: shared.add(1, p, v, d)
    dlg = make(table)
    table.link(dlg, "caller", "alice")
    assert shared.others(0, "caller", "alice") == 1
    table.remove(dlg)
    assert shared.others(0, "caller", "alice") == 0


@pytest.mark.parametrize(("text", "bits"), [(None, 0), ("", 0), ("B", BYE_ON_TIMEOUT),
                                            ("bye-on-timeout", BYE_ON_TIMEOUT)])
def test_create_flags(text: str | None, bits: int) -> None:
    assert parse_create_flags(text) == bits


@pytest.mark.parametrize(("text", "why"), [("options-ping-caller", "not supported"),
                                           ("bye-on-timeout,auto-prack", "not supported"),
                                           ("X", "unknown")])
def test_create_flags_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_create_flags(text)
