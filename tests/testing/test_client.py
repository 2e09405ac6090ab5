"""The SIP test client against a tiny server made of TransportLayer + TransactionLayer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lxml import etree

from routescript.sip import build_reply, build_request, generate_branch, parse_uri
from routescript.testing import SipTestClient, SipTimeout, pidf
from routescript.transaction import TransactionLayer
from routescript.transport import TransportLayer


class MiniServer:
    """Answers SUBSCRIBE 200 with a Contact, other requests 200; records what it got."""

    def __init__(self) -> None:
        self.transport = TransportLayer(self.on_message)
        self.transactions = TransactionLayer(self.transport, t1=0.02, timer_f=0.3)
        self.requests: list[tuple[Any, Any]] = []
        self.udp: Any = None
        self.tcp: Any = None

    def on_message(self, msg: Any, source: Any) -> None:
        if not msg.is_request:
            self.transactions.on_response(msg, source)
            return
        if self.transactions.lookup(msg, source) is not None or msg.method == "ACK":
            return
        self.requests.append((msg, source))
        txn = self.transactions.create(msg, source)
        headers = []
        if msg.method == "SUBSCRIBE":
            sock = source.socket
            headers = [("Contact", f"<sip:pres@{sock.host}:{sock.port};transport={sock.proto}>"),
                       ("Expires", str(msg.expires or 0))]
        self.transactions.reply(txn, build_reply(msg, 200, headers=headers))

    async def notify(self, client: SipTestClient, subscribe: Any, source: Any) -> Any:
        req = build_request("NOTIFY", client.contact_uri, [
            ("Via", (f"SIP/2.0/{source.proto.upper()} 127.0.0.1:{source.socket.port};"
                     f"branch={generate_branch()}")),
            ("From", f"{subscribe.header('To')};tag=srvtag"), ("To", subscribe.header("From")),
            ("Call-ID", subscribe.call_id), ("CSeq", "1 NOTIFY"), ("Event", "presence"),
            ("Contact", f"<sip:pres@127.0.0.1:{source.socket.port}>"),
            ("Subscription-State", "active;expires=600")])
        dest = self.transport.destination_for(parse_uri(client.contact_uri))
        return await self.transactions.request(req, dest)


@pytest.fixture
async def server() -> AsyncIterator[MiniServer]:
    s = MiniServer()
    s.udp = await s.transport.listen("udp", "127.0.0.1", 0)
    s.tcp = await s.transport.listen("tcp", "127.0.0.1", 0)
    yield s
    await s.transactions.close()
    await s.transport.close()


def test_requests_get_fresh_identifiers():
    client = SipTestClient("udp", ("127.0.0.1", 5060))
    client.local_host, client.local_port = "127.0.0.1", 40000
    a, b = client.options(), client.options()
    assert a.call_id != b.call_id and a.from_.tag != b.from_.tag
    assert a.via.branch.startswith("z9hG4bK") and a.via.branch != b.via.branch
    assert a.via.rport is True and a.via.sent_by == "127.0.0.1:40000"
    pub = client.publish("sip:alice@example.com", pidf("sip:alice@example.com", note="Away"), expires=60,
                         etag="e1")
    assert pub.header("Event") == "presence" and pub.expires == 60
    assert pub.header("SIP-If-Match") == "e1"
    assert pub.content_type.mime == "application/pidf+xml"
    doc = etree.fromstring(pub.body)
    assert doc.get("entity") == "sip:alice@example.com"
    assert doc.findtext(".//{urn:ietf:params:xml:ns:pidf}note") == "Away"
    refresh = client.publish("sip:alice@example.com", etag="e1")
    assert refresh.body == b"" and refresh.content_type is None
    sub = client.subscribe("sip:alice@example.com", event="presence.winfo",
                           accept="application/watcherinfo+xml")
    assert sub.event.name == "presence.winfo" and sub.header("Accept") == "application/watcherinfo+xml"
    assert sub.contacts[0].uri.port == 40000
    assert client.subscribe("sip:a@b", event=None).event is None


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_subscribe_notify_refresh_in_dialog(server, proto):
    port = (server.udp if proto == "udp" else server.tcp).port
    async with await SipTestClient.start(proto, ("127.0.0.1", port)) as client:
        sub = client.subscribe("sip:alice@127.0.0.1", expires=600)
        resp = await client.send_request(sub)
        assert resp.status == 200 and resp.expires == 600
        _, source = server.requests[-1]
        task = asyncio.create_task(server.notify(client, sub, source))
        notify = await client.expect_request("NOTIFY", call_id=sub.call_id)
        await client.reply(notify, 200)
        assert (await task).status == 200
        dialog = client.dialog(sub, resp)
        assert dialog.remote_tag == resp.to.tag and dialog.remote_target.startswith("sip:pres@127.0.0.1")
        refresh = client.subscribe(dialog=dialog, expires=0)
        assert refresh.call_id == sub.call_id and refresh.cseq.number == 2
        assert refresh.to.tag == resp.to.tag and refresh.from_.tag == sub.from_.tag
        assert refresh.ruri == dialog.remote_target
        assert (await client.send_request(refresh)).status == 200
        assert server.requests[-1][0].cseq.number == 2


async def test_auto_reply_and_unanswered_request(server):
    async with await SipTestClient.start("udp", ("127.0.0.1", server.udp.port)) as client:
        sub = client.subscribe("sip:alice@127.0.0.1")
        await client.send_request(sub)
        _, source = server.requests[-1]
        client.auto_reply["NOTIFY"] = 489
        assert (await server.notify(client, sub, source)).status == 489
        assert (await client.expect_request("NOTIFY")).method == "NOTIFY"   # still queued
        del client.auto_reply["NOTIFY"]
        resp = await server.notify(client, sub, source)                 # nobody answers
        assert resp.status == 408
        assert sum(client.retransmissions.values()) >= 2  # server retransmitted, not queued twice
        await client.expect_request("NOTIFY")
        await client.expect_no_request("NOTIFY", within=0.05)


async def test_retransmitted_request_gets_the_answer_again(server):
    async with await SipTestClient.start("udp", ("127.0.0.1", server.udp.port)) as client:
        sub = client.subscribe("sip:alice@127.0.0.1")
        await client.send_request(sub)
        _, source = server.requests[-1]
        task = asyncio.create_task(server.notify(client, sub, source))
        notify = await client.expect_request("NOTIFY")
        await asyncio.sleep(0.05)                      # let the server retransmit (T1 = 0.02) ...
        await client.reply(notify, 200)                # ... then answer
        assert (await task).status == 200


async def test_timeouts_raise_sip_timeout(server):
    async with await SipTestClient.start("udp", ("127.0.0.1", server.udp.port), timeout=0.1) as client:
        with pytest.raises(SipTimeout, match="no NOTIFY"):
            await client.expect_request("NOTIFY")
        silent = client.options()
        server.transport.on_message = lambda m, s: None     # the server stops answering
        with pytest.raises(SipTimeout, match="no final response"):
            await client.send_request(silent)


async def test_tcp_client_sees_the_server_close(server):
    async with await SipTestClient.start("tcp", ("127.0.0.1", server.tcp.port)) as client:
        assert client.connected
        client.send_raw(b"garbage without end of headers\r\n\r\n")
        assert await client.wait_closed(1.0)
        assert not client.connected
