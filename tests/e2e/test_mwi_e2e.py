"""examples/mwi.cfg over `routescript run`: message-summary (RFC 3842) as captures 17a/17b show it -
SUBSCRIBE before any PUBLISH gets a NOTIFY without body, the voicemail server's PUBLISH reaches the phone
unchanged, a malformed summary is refused with 400, the last publication wins, the script's checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from presence_e2e import ROOT, Srv, free_port, presence_cfg, run_server

from routescript.testing import SipTestClient

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio

EXAMPLE = ROOT / "examples" / "mwi.cfg"
CTYPE = "application/simple-message-summary"
SUMMARY = b"Messages-Waiting: yes\r\nMessage-Account: sip:frank@127.0.0.1\r\nVoice-Message: 2/8 (0/2)\r\n"
SUMMARY2 = b"Messages-Waiting: no\r\nMessage-Account: sip:frank@127.0.0.1\r\nVoice-Message: 0/10 (0/2)\r\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, module_presence_db: TestDb) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp("mwi")
    port = free_port()
    cfg = presence_cfg(tmp, port, db_url=module_presence_db.url, example=EXAMPLE, name="mwi.cfg")
    with run_server(cfg, tmp) as server:
        yield Srv(server, port)


def publish(vm: SipTestClient, srv: Srv, mailbox: str, body: bytes | None, **kw: object):  # type: ignore[no-untyped-def]
    return vm.publish(srv.uri(mailbox), body, event="message-summary", content_type=CTYPE, expires=600, **kw)


async def test_subscribe_then_publish_as_captured(srv: Srv) -> None:
    async with await srv.client("frank") as frank, await srv.client("vm") as vm:
        sub = frank.subscribe(srv.uri("frank"), event="message-summary", accept=CTYPE, expires=600)
        resp = await frank.send_request(sub)
        assert resp.status == 200 and resp.header("Expires") == "600"
        # 17a: no publication yet -> active NOTIFY without body or Content-Type
        n = await frank.expect_request("NOTIFY", call_id=sub.call_id)
        await frank.reply(n)
        assert n.header("Event") == "message-summary" and n.cseq.number == 1
        assert n.header("Subscription-State") == "active;expires=600"
        assert n.body == b"" and n.header("Content-Type") is None
        # 17b: the voicemail server publishes -> 200 with an ETag; the phone gets the body as it is
        r = await vm.send_request(publish(vm, srv, "frank", SUMMARY))
        assert r.status == 200 and r.header("SIP-ETag") and r.header("Expires") == "600"
        n = await frank.expect_request("NOTIFY", call_id=sub.call_id)
        await frank.reply(n)
        assert n.cseq.number == 2 and n.header("Content-Type") == CTYPE
        assert n.body == SUMMARY
        assert n.header("Subscription-State").startswith("active;expires=")


async def test_malformed_summary_refused_with_400(srv: Srv) -> None:
    async with await srv.client("vm") as vm:
        for bad in (b"Messages-Waiting: maybe\r\n", b"<xml/>",
                    b"Messages-Waiting: yes\r\nVoice-Message: two\r\n"):
            r = await vm.send_request(publish(vm, srv, "gwen", bad))
            assert (bad, r.status) == (bad, 400)
        # nothing was stored: a watcher gets no body
        async with await srv.client("gwen") as gwen:
            sub = gwen.subscribe(srv.uri("gwen"), event="message-summary", accept=CTYPE)
            assert (await gwen.send_request(sub)).status == 200
            n = await gwen.expect_request("NOTIFY", call_id=sub.call_id)
            await gwen.reply(n)
            assert n.body == b""


async def test_last_publication_wins(srv: Srv) -> None:
    async with await srv.client("hal") as hal, await srv.client("vm") as vm, await srv.client("vm") as vm2:
        hal.auto_reply["NOTIFY"] = 200
        await vm.send_request(publish(vm, srv, "hal", SUMMARY))
        await vm2.send_request(publish(vm2, srv, "hal", SUMMARY2))   # another publication (ETag)
        sub = hal.subscribe(srv.uri("hal"), event="message-summary", accept=CTYPE)
        assert (await hal.send_request(sub)).status == 200
        n = await hal.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.body == SUMMARY2     # not aggregated: the newest one, unchanged


async def test_script_checks_who_publishes_and_subscribes(srv: Srv) -> None:
    async with await srv.client("ivan") as ivan:
        r = await ivan.send_request(publish(ivan, srv, "ivan", SUMMARY))
        assert r.status == 403
        r = await ivan.send_request(ivan.subscribe(srv.uri("frank"), event="message-summary", accept=CTYPE))
        assert r.status == 403
