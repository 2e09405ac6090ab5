"""owner_slot's rules (docs/workers.md section 2) as a table, and the slot-carrying branch and tag forms."""

from __future__ import annotations

import os
import zlib

import pytest

from routescript.sip.peek import PeekedKeys
from routescript.workers.dispatch import (
    MAX_SLOTS,
    SlotTable,
    branch_slot,
    conn_id_base,
    conn_id_slot,
    owner_slot,
    parse_slot_tag,
    slot_branch,
    slot_tag,
    tag_slot,
)

N = 4
CALL = "call-2@10.0.0.1"
BY_CALL = zlib.crc32(CALL.encode()) % N
BY_URI = zlib.crc32(b"alice@example.com") % N
assert BY_CALL != BY_URI, "pick keys that hash apart, or the table below cannot tell the rules apart"


def request(method: str, *, to_tag: str | None = None, user_host: str | None = None) -> PeekedKeys:
    return PeekedKeys(False, method, "z9hG4bK-peer", to_tag, CALL, user_host)


def response(branch: str | None) -> PeekedKeys:
    return PeekedKeys(True, None, branch, None, None)   # what the peek reads of a response


CASES = [
    # rule 1: a response goes to the slot in our branch; any other branch: whoever read it (None)
    ("response, our branch", response(slot_branch(2)), "uri", 2),
    ("response, our branch, slot 0", response(slot_branch(0)), "callid", 0),
    ("response, foreign branch", response("z9hG4bK776asdhds"), "uri", None),
    ("response, no branch", response(None), "uri", None),
    ("response, our form but slot >= n", response(slot_branch(9)), "uri", None),
    # rule 2: a request with our To tag goes to the slot in the tag (whatever the affinity)
    ("in-dialog SUBSCRIBE", request("SUBSCRIBE", to_tag=slot_tag(3, 7, "ab12")), "uri", 3),
    ("BYE to our dialog", request("BYE", to_tag=slot_tag(1, 0, "ff")), "callid", 1),
    # rule 3: uri affinity, initial PUBLISH / SUBSCRIBE -> presentity URI
    ("initial SUBSCRIBE", request("SUBSCRIBE", user_host="alice@example.com"), "uri", BY_URI),
    ("initial PUBLISH", request("PUBLISH", user_host="alice@example.com"), "uri", BY_URI),
    # rule 4: everything else -> Call-ID
    ("initial SUBSCRIBE, callid affinity", request("SUBSCRIBE", user_host="alice@example.com"), "callid",
     BY_CALL),
    ("INVITE", request("INVITE"), "uri", BY_CALL),
    ("ACK with a foreign To tag", request("ACK", to_tag="a6c85cf"), "uri", BY_CALL),
    ("tag of our form, slot >= n", request("BYE", to_tag=slot_tag(5, 0, "x")), "uri", BY_CALL),
    ("PUBLISH to a tel: URI (no user@host)", request("PUBLISH"), "uri", BY_CALL),
]


@pytest.mark.parametrize(("keys", "affinity", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_owner_slot_rules(keys: PeekedKeys, affinity: str, expected: int | None) -> None:
    assert owner_slot(keys, N, affinity) == expected  # type: ignore[arg-type]


def test_the_keys_of_a_request_without_call_id_are_our_bug() -> None:
    with pytest.raises(ValueError, match="without a Call-ID"):
        owner_slot(PeekedKeys(False, "INVITE", "z9hG4bK-peer", None, None), N)


def test_slot_table_maps_a_slot_not_running_to_its_adopter() -> None:
    adopted = SlotTable(version=3, owner_of=(0, 0, 2, 3))   # slot 1 adopted by worker 0
    assert owner_slot(request("BYE", to_tag=slot_tag(1, 2, "x")), N, "uri", adopted) == 0
    assert owner_slot(response(slot_branch(1)), N, "uri", adopted) == 0
    assert owner_slot(response(slot_branch(2)), N, "uri", adopted) == 2
    assert owner_slot(response("z9hG4bKother"), N, "uri", adopted) is None
    assert owner_slot(request("BYE", to_tag=slot_tag(3, 0, "x")), N, "uri", SlotTable.identity(N)) == 3


@pytest.mark.parametrize("owner_of", [(), (0, 4), (-1,)])
def test_slot_table_refuses_a_mapping_outside_its_slots(owner_of: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="slot"):
        SlotTable(1, owner_of)


def test_branches_carry_the_slot_and_are_unique() -> None:
    branches = [slot_branch(s) for s in (0, 1, 35, 36, MAX_SLOTS - 1)]
    assert [branch_slot(b) for b in branches] == [0, 1, 35, 36, MAX_SLOTS - 1]
    assert all(b.startswith("z9hG4bKrs") for b in branches)     # RFC 3261 magic cookie first
    assert branches[3].startswith("z9hG4bKrs10.")                # base 36
    assert len({slot_branch(0) for _ in range(1000)}) == 1000


@pytest.mark.parametrize("branch", ["z9hG4bK1234", "z9hG4bKrs", "z9hG4bKrs1", "z9hG4bKrs1.", "z9hG4bKrsA.x",
                                    "z9hG4bKrs+1.x", "z9hG4bKrs1_0.x", "z9hG4bKrszzzzzzz.x", "z9hG4bKrs.x"])
def test_other_branches_name_no_slot(branch: str) -> None:
    assert branch_slot(branch) is None


def test_a_forked_child_draws_its_own_branch_prefix() -> None:
    """RFC 3261 8.1.1.7: workers forked from one parent (and a worker restarted in the same slot) must
    not repeat each other's branches."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        os.write(write, slot_branch(1).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = slot_branch(1)
    assert branch_slot(child) == 1
    assert child.split(".")[1] != mine.split(".")[1]


def test_tags_carry_slot_and_epoch() -> None:
    tag = slot_tag(37, 2, "9f3c0a11d2e4b5c6")
    assert tag == "11.2.9f3c0a11d2e4b5c6"
    assert parse_slot_tag(tag) == (37, 2)
    assert tag_slot(tag) == 37


@pytest.mark.parametrize("tag", ["9f3c0a11d2e4b5c6", "1.2", "1..x", ".1.x", "A.1.x", "1.-1.x", "1.2."])
def test_other_tags_name_no_slot(tag: str) -> None:
    assert parse_slot_tag(tag) is None
    assert tag_slot(tag) is None


@pytest.mark.parametrize(("slot", "epoch", "base"),
                         [(-1, 0, "x"), (MAX_SLOTS, 0, "x"), (0, -1, "x"), (0, 0, "")])
def test_slot_tag_refuses_bad_parts(slot: int, epoch: int, base: str) -> None:
    with pytest.raises(ValueError):
        slot_tag(slot, epoch, base)


def test_conn_ids_carry_the_slot() -> None:
    assert conn_id_slot(conn_id_base(3) + 17) == 3
    assert conn_id_slot(17) == 0
