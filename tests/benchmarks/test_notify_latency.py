"""benchmarks/notify_latency.py: the Call-IDs it picks land where the cross-worker figure needs them."""

from __future__ import annotations

import itertools

from benchmarks.notify_latency import call_id_for_slot
from routescript.sip.peek import peek_keys
from routescript.workers.dispatch import owner_slot


def test_call_ids_are_chosen_for_the_slot_the_dispatcher_gives_them() -> None:
    counter = itertools.count(1)
    for slot in (0, 1, 0, 1, 1):
        cid = call_id_for_slot(slot, 2, "pub", counter)
        data = (f"PUBLISH sip:latency@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx1\r\n"
                f"From: <sip:latency@127.0.0.1>;tag=a\r\nTo: <sip:latency@127.0.0.1>\r\nCall-ID: {cid}\r\n"
                f"CSeq: 1 PUBLISH\r\nContent-Length: 0\r\n\r\n").encode()
        keys = peek_keys(data)
        assert keys is not None
        assert owner_slot(keys, 2, "callid") == slot
