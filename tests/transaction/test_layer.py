"""TransactionLayer (the asyncio adapter) over a real TransportLayer on loopback, small T1 so the few
timers these tests wait for run in milliseconds. What the transactions decide (retransmissions, Timers
E/F/G/H/I/J/K, bounds) is tested on a fake clock in test_core.py; here the adapter is the subject: bytes
reach the socket, callbacks are called, one loop timer runs them all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from routescript.sip import build_reply, build_request, generate_branch, parse_uri
from routescript.sip.assembled import assemble_request
from routescript.testing import SipTestClient
from routescript.transaction import TransactionLayer
from routescript.transport import Destination, TransportLayer

T1 = 0.02  # 64*T1 = 1.28 s


@dataclass
class Core:
    """What the real core does with the two layers: lookup, create, run the 'script', reply."""

    transport: Any = None
    transactions: Any = None
    script_runs: list[Any] = field(default_factory=list)
    status: int | None = 200       # None: the script does not answer
    stray: list[Any] = field(default_factory=list)
    txns: list[Any] = field(default_factory=list)

    def on_message(self, msg: Any, source: Any) -> None:
        if not msg.is_request:
            if not self.transactions.on_response(msg, source):
                self.stray.append(msg)
            return
        if self.transactions.lookup(msg, source) is not None:
            return                                   # retransmission: absorbed, script not run
        if msg.method == "ACK":
            return
        txn = self.transactions.create(msg, source)
        self.txns.append(txn)
        self.script_runs.append(msg)
        if self.status is not None:
            self.transactions.reply(txn, build_reply(msg, self.status, to_tag="srv"))


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    c = Core()
    c.transport = TransportLayer(c.on_message)
    c.transactions = TransactionLayer(c.transport, t1=T1, t2=0.08, t4=0.1, timer_f=0.5)
    yield c
    await c.transactions.close()
    await c.transport.close()


def notify(client: SipTestClient, via: str, cseq: int = 1) -> Any:
    return build_request("NOTIFY", client.contact_uri, [
        ("Via", f"SIP/2.0/{client.proto.upper()} {via};branch={generate_branch()}"),
        ("From", "<sip:alice@127.0.0.1>;tag=srv"), ("To", f"<{client.aor}>;tag=cli"),
        ("Call-ID", "sub-1"), ("CSeq", f"{cseq} NOTIFY"), ("Event", "presence"),
        ("Subscription-State", "active;expires=600")])


async def test_retransmitted_request_gets_the_same_reply_and_runs_the_script_once(core):
    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        pub = client.publish("sip:alice@127.0.0.1", b"<presence/>")
        first = await client.send_request(pub)
        client.send(pub)                                    # the UAC retransmits
        client.send(pub)
        for _ in range(100):
            if len(client.responses_for(pub)) == 3:
                break
            await asyncio.sleep(0.01)
        answers = client.responses_for(pub)
        assert [r.status for r in answers] == [200, 200, 200]
        assert {r.to.tag for r in answers} == {first.to.tag}
        assert len(core.script_runs) == 1
        assert core.transactions.pending == 0               # not live any more: the limit is free
        assert core.transactions.completed == 1             # kept for Timer J (test_core: its expiry)


async def test_tm_statistics_counted_by_the_layer_itself(core):
    """Without the core's CoreCounters the layer counts into its own TransactionCounts: a new server
    transaction and its reply once (not their retransmissions), a client transaction, its response."""
    counts = core.transactions.counters
    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        pub = client.publish("sip:alice@127.0.0.1", b"<presence/>")
        await client.send_request(pub)
        client.send(pub)                                    # absorbed: counted nowhere
        client.auto_reply["NOTIFY"] = 200
        dest = core.transport.destination_for(parse_uri(client.contact_uri))
        assert (await core.transactions.request(notify(client, f"127.0.0.1:{info.port}"), dest)).status == 200
        await asyncio.sleep(0.05)
    assert (counts.UAS_transactions, counts.local_replies, counts.relayed_replies) == (1, 1, 0)
    assert (counts.UAC_transactions, counts.received_replies) == (1, 1)
    assert counts.finals == [0, 0, 2, 0, 0, 0, 0]             # the 200 we sent, the 200 we got


async def test_tcp_server_transaction_ends_after_the_reply(core):
    info = await core.transport.listen("tcp", "127.0.0.1", 0)
    async with await SipTestClient.start("tcp", ("127.0.0.1", info.port)) as client:
        assert (await client.send_request(client.options())).status == 200
        assert core.transactions.pending == 0               # Timer J = 0 on TCP


async def test_notify_over_udp_answered(core):
    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        client.auto_reply["NOTIFY"] = 200
        dest = core.transport.destination_for(parse_uri(client.contact_uri))
        resp = await core.transactions.request(notify(client, f"127.0.0.1:{info.port}"), dest)
        assert resp.status == 200 and resp.to.tag == "cli"
        got = await client.expect_request("NOTIFY")
        assert got.header("Subscription-State") == "active;expires=600"


async def test_notify_provisional_then_final_delivered_once(core):
    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        dest = core.transport.destination_for(parse_uri(client.contact_uri))
        provisionals: list[Any] = []
        task = asyncio.create_task(core.transactions.request(
            notify(client, f"127.0.0.1:{info.port}"), dest, on_provisional=provisionals.append))
        got = await client.expect_request("NOTIFY")
        await client.reply(got, 100)
        await client.reply(got, 481)
        resp = await asyncio.wait_for(task, 2)
        assert resp.status == 481
        assert [p.status for p in provisionals] == [100]    # datagrams on loopback keep their order


async def test_notify_over_tcp_reuses_the_subscribers_connection(core):
    info = await core.transport.listen("tcp", "127.0.0.1", 0)
    async with await SipTestClient.start("tcp", ("127.0.0.1", info.port)) as client:
        client.auto_reply["NOTIFY"] = 200
        await client.send_request(client.subscribe("sip:alice@127.0.0.1"))
        dest = core.transport.destination_for(parse_uri(client.contact_uri))
        resp = await core.transactions.request(notify(client, f"127.0.0.1:{info.port}"), dest)
        assert resp.status == 200
        assert core.transport.tcp_connections == 1
        assert client.retransmissions == {}                  # never retransmitted over TCP


async def test_notify_to_an_unreachable_tcp_contact_gives_503(core):
    await core.transport.listen("tcp", "127.0.0.1", 0)
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    req = build_request("NOTIFY", f"sip:bob@127.0.0.1:{port};transport=tcp", [
        ("Via", f"SIP/2.0/TCP 127.0.0.1:5060;branch={generate_branch()}"),
        ("From", "<sip:a@b>;tag=1"), ("To", "<sip:bob@b>;tag=2"), ("Call-ID", "u1"), ("CSeq", "1 NOTIFY")])
    resp = await core.transactions.request(req, Destination("tcp", "127.0.0.1", port))
    assert resp.status == 503
    assert core.transactions.pending == 0


async def test_close_answers_waiting_requests_with_503(core):
    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        dest = Destination("udp", "127.0.0.1", client.local_port)
        task = asyncio.create_task(core.transactions.request(notify(client, f"127.0.0.1:{info.port}"), dest))
        await client.expect_request("NOTIFY")
        await core.transactions.close()
        assert (await asyncio.wait_for(task, 1)).status == 503


async def test_cancelled_request_forgets_its_transaction(core):
    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        dest = Destination("udp", "127.0.0.1", client.local_port)
        task = asyncio.create_task(core.transactions.request(notify(client, f"127.0.0.1:{info.port}"), dest))
        await client.expect_request("NOTIFY")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert core.transactions.pending == 0


async def test_many_transactions_share_one_timer(core):
    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        client.auto_reply["NOTIFY"] = 200
        dest = Destination("udp", "127.0.0.1", client.local_port)
        tasks = [asyncio.create_task(core.transactions.request(
            notify(client, f"127.0.0.1:{info.port}", cseq=i), dest)) for i in range(1, 51)]
        before = len(asyncio.all_tasks())
        results = await asyncio.wait_for(asyncio.gather(*tasks), 3)
        assert [r.status for r in results] == [200] * 50
        assert before <= 52                                  # the 50 callers, this test, no timer tasks
        assert core.transactions.pending == 0                # answered: only their keys wait Timer K
        assert core.transactions.core.answered == 50


async def test_notify_too_large_for_a_datagram_fails_at_once_and_other_timers_run(core):
    """A NOTIFY over 65,507 bytes cannot be a datagram: the send fails at once (local 503) instead of
    being retransmitted in vain until Timer F, its transaction ends, and a NOTIFY to someone else sent
    meanwhile is retransmitted and times out as usual (the layer's timers keep running)."""
    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        dest = core.transport.destination_for(parse_uri(client.contact_uri))
        big = assemble_request("NOTIFY", client.contact_uri, [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{info.port};branch={generate_branch()}"),
            ("From", "<sip:alice@127.0.0.1>;tag=srv"), ("To", f"<{client.aor}>;tag=cli"),
            ("Call-ID", "big-1"), ("CSeq", "1 NOTIFY"), ("Content-Length", "70000")], b"x" * 70000)
        other = notify(client, f"127.0.0.1:{info.port}")
        loop = asyncio.get_running_loop()
        started = loop.time()
        big_resp, other_resp = await asyncio.gather(core.transactions.request(big, dest),
                                                    core.transactions.request(other, dest))
        assert big_resp.status == 503 and big_resp.call_id == "big-1"
        assert other_resp.status == 408 and loop.time() - started >= 0.45
        assert client.retransmissions.get((other.via.branch, "NOTIFY"), 0) >= 5
        assert [r.call_id for r in client.requests] == ["sub-1"]   # nothing of the big one arrived
        assert core.transactions.pending == 0


async def test_a_failing_timer_does_not_stop_the_others(core, monkeypatch):
    """One transaction whose timer handling fails, and whose local 503 cannot be built either (what a
    NOTIFY over 64 KiB did before the fix): the timers of the other transactions go on. Before: the
    exception escaped the adapter's timer callback and no timer was ever armed again (no retransmission,
    no 408); now it still escapes (to the loop's handler) but the callback re-arms in a `finally`."""
    import routescript.transaction.core as core_module

    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        dest = core.transport.destination_for(parse_uri(client.contact_uri))
        broken = notify(client, f"127.0.0.1:{info.port}", cseq=1)
        healthy = notify(client, f"127.0.0.1:{info.port}", cseq=2)
        first = asyncio.ensure_future(core.transactions.request(broken, dest))
        await asyncio.sleep(0)
        transaction = next(t for t in core.transactions.core.client_transactions() if t.request is broken)

        def fail(now):
            raise RuntimeError("bug")

        def reply_unless_broken(request, *args, **kwargs):
            if request is broken:
                raise RuntimeError("cannot build")
            return build_reply(request, *args, **kwargs)

        monkeypatch.setattr(transaction, "handle_timer", fail)
        monkeypatch.setattr(core_module, "build_reply", reply_unless_broken)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: None)   # the escaping RuntimeError is expected
        try:
            healthy_resp = await asyncio.wait_for(core.transactions.request(healthy, dest), 3)
        finally:
            loop.set_exception_handler(None)
            first.cancel()
        assert healthy_resp.status == 408
        assert client.retransmissions.get((healthy.via.branch, "NOTIFY"), 0) >= 5


async def test_reply_hooks_see_every_response_sent_and_a_failing_one_is_logged(core, caplog):
    """ServerTransaction.reply_hooks (OpenSIPS's TMCB_RESPONSE_OUT, the dialog module's hook): called
    after each response went out; one that raises is logged and the next still runs."""
    seen: list[int] = []

    def broken(response: Any) -> None:
        raise RuntimeError("a hook's bug")

    core.status = None
    info = await core.transport.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        req = client.options()
        client.send(req)
        for _ in range(100):
            if core.script_runs:
                break
            await asyncio.sleep(0.01)
        txn = core.txns[0]
        txn.reply_hooks = [broken, lambda response: seen.append(response.status)]
        core.transactions.reply(txn, build_reply(core.script_runs[0], 100))
        core.transactions.reply(txn, build_reply(core.script_runs[0], 200, to_tag="srv"))
        assert (await client.expect_response(req, final=True)).status == 200
    assert seen == [100, 200]
    assert "a reply hook failed on 100" in caplog.text
