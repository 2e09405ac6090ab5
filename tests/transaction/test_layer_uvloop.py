"""The transaction timers run under uvloop too. uvloop's call_at() for a deadline already past returns a
plain Handle without when(), so the layer keeps the armed deadline itself. A transport whose send blocks
longer than the retransmission interval makes every re-arm land in the past."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import uvloop

from routescript.sip import build_request, generate_branch
from routescript.transaction import TransactionLayer
from routescript.transport import Destination


class SlowTransport:
    """Sends nothing; each send blocks the loop past the next retransmission deadline."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, data: bytes, dest: Any) -> None:
        self.sent += 1
        time.sleep(0.05)

    async def deliver(self, data: bytes, dest: Any) -> None:
        self.send(data, dest)

    def send_reply(self, response: Any, source: Any, dest: Any = None) -> None:
        raise AssertionError("no server transactions here")

    def reply_destination(self, response: Any, source: Any) -> Destination:
        raise AssertionError("no server transactions here")


async def _scenario() -> tuple[list[int], int]:
    transport = SlowTransport()
    layer = TransactionLayer(transport, t1=0.01, t2=0.02, t4=0.1, timer_f=0.4)
    try:
        calls = []
        for n in range(3):
            req = build_request("NOTIFY", "sip:bob@127.0.0.1:5999", [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:5998;branch={generate_branch()}"),
                ("From", "<sip:alice@127.0.0.1>;tag=srv"), ("To", "<sip:bob@127.0.0.1>;tag=cli"),
                ("Call-ID", f"uv-{n}"), ("CSeq", f"{n + 1} NOTIFY"), ("Event", "presence")])
            calls.append(asyncio.ensure_future(layer.request(req, Destination("udp", "127.0.0.1", 5999))))
            await asyncio.sleep(0.02)
        statuses = [r.status for r in await asyncio.wait_for(asyncio.gather(*calls), 10)]
        return statuses, transport.sent
    finally:
        await layer.close()


def test_client_transactions_time_out_under_uvloop_with_past_deadlines() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        statuses, sent = runner.run(_scenario())
    assert statuses == [408, 408, 408]
    assert sent > 3                      # retransmissions happened (Timer E), and the timers kept running
