"""The final reply of a non-INVITE server transaction over UDP through the adapter (the core's one-step
path, TransactionCore._complete_udp): sent once, kept as bytes for retransmissions, the machine in
Completed; a transport error ends it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from routescript.sip import build_reply, parse_message
from routescript.transaction import State, TransactionError, TransactionLayer
from routescript.sip import Destination, SocketInfo, Source

SOCK = SocketInfo("udp", "127.0.0.1", 5060)
SRC = Source("udp", SOCK, "127.0.0.1", 40000)
TCP_SRC = Source("tcp", SocketInfo("tcp", "127.0.0.1", 5060), "127.0.0.1", 40001, conn_id=7)


def publish(branch: str = "z9hG4bK-final-1") -> Any:
    return parse_message((
        "PUBLISH sip:alice@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:40000;branch={branch}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:alice@127.0.0.1>\r\n"
        "Call-ID: final-udp@test\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\n"
        "Content-Length: 0\r\n\r\n").encode())


class Transport:
    """Records what is sent; `fail` makes every send raise as a lost socket does."""

    def __init__(self) -> None:
        self.replies: list[tuple[Any, Any]] = []
        self.sent: list[tuple[bytes, Any]] = []
        self.fail = False

    def send_reply(self, response: Any, source: Any, dest: Any = None) -> None:
        if self.fail:
            raise OSError("socket closed")
        self.replies.append((response, dest))

    def send(self, data: bytes, dest: Any) -> None:
        if self.fail:
            raise OSError("socket closed")
        self.sent.append((data, dest))

    def reply_destination(self, response: Any, source: Any) -> Destination:
        return Destination("udp", "dest-of", source.remote_port)

    async def deliver(self, data: bytes, dest: Any) -> None:
        self.send(data, dest)


async def test_final_reply_is_sent_once_kept_for_retransmissions_and_a_second_one_refused() -> None:
    transport = Transport()
    layer = TransactionLayer(transport)
    try:
        request = publish()
        txn = layer.create(request, SRC)
        response = build_reply(request, 200, to_tag="t1")
        layer.reply(txn, response)
        dest = Destination("udp", "dest-of", 40000)
        assert transport.replies == [(response, dest)]                   # routed once, with its dest
        assert txn.state is State.COMPLETED and txn.replied and layer.pending == 0
        with pytest.raises(TransactionError):
            layer.reply(txn, build_reply(request, 500, to_tag="t1"))
        again = publish()                                                # the retransmission
        assert layer.lookup(again, SRC) is not None
        assert transport.sent == [(response.to_bytes(), dest)]
    finally:
        await layer.close()


async def test_transport_error_on_the_final_reply_ends_the_transaction_and_keeps_nothing() -> None:
    transport = Transport()
    layer = TransactionLayer(transport)
    try:
        request = publish("z9hG4bK-final-2")
        txn = layer.create(request, SRC)
        transport.fail = True
        layer.reply(txn, build_reply(request, 200, to_tag="t2"))
        assert txn.state is State.TERMINATED and layer.pending == 0
        transport.fail = False
        assert layer.lookup(publish("z9hG4bK-final-2"), SRC) is None    # a new request, not a resend
    finally:
        await layer.close()


async def test_provisional_then_final_and_reliable_transports_take_the_machine() -> None:
    transport = Transport()
    layer = TransactionLayer(transport)
    try:
        request = publish("z9hG4bK-final-3")
        txn = layer.create(request, SRC)
        layer.reply(txn, build_reply(request, 100))
        assert txn.state is State.PROCEEDING and layer.pending == 1
        layer.reply(txn, build_reply(request, 200, to_tag="t3"))
        assert txn.state is State.COMPLETED and layer.pending == 0
        # TCP: Timer J is 0, the machine ends the transaction at once; nothing goes to the table
        tcp_request = publish("z9hG4bK-final-4")
        tcp = layer.create(tcp_request, TCP_SRC)
        layer.reply(tcp, build_reply(tcp_request, 200, to_tag="t4"))
        assert tcp.state is State.TERMINATED and layer.pending == 0
        assert layer.lookup(publish("z9hG4bK-final-4"), TCP_SRC) is None
    finally:
        await layer.close()


async def test_on_final_is_never_called_inside_send_request() -> None:
    """A request refused at once (over the bound) or whose first send fails: the local 503 reaches
    on_final from the loop, after send_request has returned (the NOTIFY sender relies on it)."""
    from routescript.sip import build_request, generate_branch

    transport = Transport()
    layer = TransactionLayer(transport, max_transactions=1)
    got: list[int] = []
    try:
        def notify() -> Any:
            return build_request("NOTIFY", "sip:bob@127.0.0.1:5999", [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={generate_branch()}"),
                ("From", "<sip:a@127.0.0.1>;tag=s"), ("To", "<sip:bob@127.0.0.1>;tag=c"),
                ("Call-ID", "n-1"), ("CSeq", "1 NOTIFY")])

        dest = Destination("udp", "127.0.0.1", 5999)
        transport.fail = True
        assert layer.send_request(notify(), dest, lambda r: got.append(r.status)) is not None
        assert got == [] and layer.pending == 0
        transport.fail = False
        layer.create(publish("z9hG4bK-bound"), SRC)                      # the one live transaction
        assert layer.send_request(notify(), dest, lambda r: got.append(r.status)) is None
        assert got == []
        await asyncio.sleep(0)
        assert got == [503, 503]
    finally:
        await layer.close()
