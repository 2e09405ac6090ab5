"""pua_bla end to end with examples/bla.cfg, the shape of OpenSIPS's pua_bla sample: two phones of the shared
line "line1" REGISTER (bla_set_flag); the server SUBSCRIBEs to each for `dialog;sla` (From the line,
Contact server_address); each phone NOTIFYs its calls to us; bla_handle_notify() publishes them on the
line, so the other phone (a dialog;sla watcher of the line) sees them and the phone itself does not.
A NOTIFY in no subscription of ours gets 481, a bad body 400; a terminated subscription removes the
phone's calls from the line; an unREGISTER unsubscribes. Over UDP and TCP, with 1 and 2 workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lxml import etree
from presence_e2e import ROOT, Srv, free_port, presence_cfg, run_server

from routescript.sip import SIPRequest, SIPResponse
from routescript.testing import SipTestClient
from routescript.testing.client import SipTimeout

pytestmark = pytest.mark.asyncio

EXAMPLE = ROOT / "examples" / "bla.cfg"
CTYPE = "application/dialog-info+xml"
NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}
LINE = "sip:line1@127.0.0.1"


def info(dialogs: list[tuple[str, str]], version: int = 1) -> bytes:
    items = "".join(f'<dialog id="{i}" call-id="c-{i}" direction="recipient"><state>{s}</state></dialog>'
                    for i, s in dialogs)
    return (f'<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
            f'version="{version}" state="full" entity="{LINE}">{items}</dialog-info>').encode()


def states(body: bytes) -> dict[str, str]:
    root = etree.fromstring(body)
    return {d.get("id"): d.findtext("d:state", namespaces=NS) for d in root.findall("d:dialog", NS)}


@pytest.fixture(scope="module", params=[("udp", 1), ("tcp", 1), ("udp", 2), ("tcp", 2)],
                ids=["udp-1worker", "tcp-1worker", "udp-2workers", "tcp-2workers"])
def srv(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Srv, str]]:
    proto, workers = request.param
    tmp = tmp_path_factory.mktemp(f"pua-bla-{proto}{workers}")
    port = free_port()
    cfg = presence_cfg(tmp, port, example=EXAMPLE, name="bla.cfg", workers=workers)
    with run_server(cfg, tmp) as server:
        if workers > 1:
            server.wait_for("routescript started", count=1)
        yield Srv(server, port), proto
        assert "Traceback" not in server.log()


class SharedLinePhone:
    """A phone of the line: answers the server's SUBSCRIBE and NOTIFYs its calls in that dialog."""

    def __init__(self, client: SipTestClient) -> None:
        self.client = client
        self.sub: SIPRequest | None = None
        self.ok: SIPResponse | None = None
        self.cseq = 0
        self.reg_cseq = 0

    async def register(self, srv: Srv, expires: int = 600) -> SIPRequest:
        """REGISTER with one Call-ID and a growing CSeq (RFC 3261 10.2.4), as phones do: with several
        workers every REGISTER of the phone reaches the worker holding its subscription."""
        c = self.client
        self.reg_cseq += 1
        reg = c.request("REGISTER", f"sip:127.0.0.1:{srv.port}", to=c.aor,
                        headers=[("Expires", str(expires))], call_id=f"reg-{c.local_port}",
                        cseq=self.reg_cseq)
        assert (await c.send_request(reg)).status == 200
        return reg

    async def subscribed(self, srv: Srv) -> None:
        sub = await self.client.expect_request("SUBSCRIBE", timeout=5)
        assert sub.header("Event") == "dialog;sla"
        assert str(sub.from_.uri) == f"sip:{self.client.user}@127.0.0.1" and sub.from_.tag   # the line
        assert str(sub.contacts[0].uri) == f"sip:bla@127.0.0.1:{srv.port}"   # server_address
        assert sub.ruri == self.client.contact_uri
        assert 590 <= int(sub.header("Expires") or 0) <= 600
        self.sub = sub
        self.ok = await self.client.reply(sub, 200, headers=[("Contact", f"<{self.client.contact_uri}>"),
                                                             ("Expires", sub.header("Expires") or "600")])

    def notify(self, body: bytes, state: str = "active;expires=600", *,
               to_tag: str | None = None) -> SIPRequest:
        assert self.sub is not None and self.ok is not None
        self.cseq += 1
        return self.client.request(
            "NOTIFY", str(self.sub.contacts[0].uri), call_id=self.sub.call_id, from_=str(self.sub.to.uri),
            to=str(self.sub.from_.uri), from_tag=self.ok.to.tag, to_tag=to_tag or self.sub.from_.tag,
            cseq=self.cseq, headers=[("Event", "dialog;sla"), ("Subscription-State", state)],
            body=body, content_type=CTYPE if body else None)

    async def tell(self, body: bytes, state: str = "active;expires=600") -> int:
        return (await self.client.send_request(self.notify(body, state))).status


async def seen(watcher: SipTestClient, call_id: str, expected: dict[str, str]) -> None:
    """NOTIFYs until one shows `expected` (with 2 workers a publication made in one worker may reach the
    watcher's worker through the change feed after an earlier NOTIFY: the newest state wins)."""
    got: list[dict[str, str]] = []
    for _ in range(6):
        try:
            n = await watcher.expect_request("NOTIFY", call_id=call_id, timeout=5)
        except SipTimeout:
            break
        got.append(states(n.body))
        if got[-1] == expected:
            return
    raise AssertionError(f"never {expected}: {got}")


async def not_told(watcher: SipTestClient, call_id: str, dialog_id: str) -> None:
    """No NOTIFY within half a second shows `dialog_id` (a NOTIFY of an earlier change, late through
    the change feed between workers, may still come)."""
    while True:
        try:
            n = await watcher.expect_request("NOTIFY", call_id=call_id, timeout=0.5)
        except SipTimeout:
            return
        assert dialog_id not in states(n.body), n.body


async def watch_line(phone: SipTestClient, srv: Srv) -> SIPRequest:
    sub = phone.subscribe(srv.uri("line1"), event="dialog;sla", accept=CTYPE)
    assert (await phone.send_request(sub)).status == 200
    await phone.expect_request("NOTIFY", call_id=sub.call_id, timeout=5)
    return sub


async def test_two_phones_of_a_shared_line_see_each_others_calls(srv: tuple[Srv, str]) -> None:
    server, proto = srv
    async with await server.client("line1", proto) as desk_c, await server.client("line1", proto) as lobby_c:
        desk_c.auto_reply["NOTIFY"] = lobby_c.auto_reply["NOTIFY"] = 200
        desk, lobby = SharedLinePhone(desk_c), SharedLinePhone(lobby_c)
        for phone in (desk, lobby):
            await phone.register(server)
            await phone.subscribed(server)
            assert await phone.tell(info([])) == 200          # the first NOTIFY: no call yet
        w_desk, w_lobby = await watch_line(desk_c, server), await watch_line(lobby_c, server)

        # the desk phone takes a call: the lobby phone is told, the desk phone is not (Sender)
        assert await desk.tell(info([("d1", "confirmed")])) == 200
        await seen(lobby_c, w_lobby.call_id, {"d1": "confirmed"})
        await not_told(desk_c, w_desk.call_id, "d1")

        # the lobby phone rings on another call: the desk phone sees both
        assert await lobby.tell(info([("l1", "early")])) == 200
        await seen(desk_c, w_desk.call_id, {"d1": "confirmed", "l1": "early"})

        # the desk phone's subscription ends: its calls leave the line
        assert await desk.tell(b"", "terminated;reason=noresource") == 200
        await seen(lobby_c, w_lobby.call_id, {"l1": "early"})
        # ... and a later NOTIFY of that dialog belongs to no subscription
        assert await desk.tell(info([("d2", "early")])) == 481


async def test_bad_notifies_and_unregister(srv: tuple[Srv, str]) -> None:
    server, proto = srv
    async with await server.client("line2", proto) as c, await server.client("line2", proto) as stranger:
        phone = SharedLinePhone(c)
        await phone.register(server)
        await phone.subscribed(server)
        note = f'<dialog-info xmlns="{NS["d"]}"><note/></dialog-info>'.encode()
        assert await phone.tell(note) == 400                    # only <dialog> children
        assert await phone.tell(b"<dialog-info") == 400         # not XML
        assert await phone.tell(info([]), "bogus") == 400       # Subscription-State unknown
        wrong = phone.notify(info([]), to_tag="not-our-tag")
        assert (await c.send_request(wrong)).status == 481
        forged = stranger.request("NOTIFY", f"sip:bla@127.0.0.1:{server.port}", to_tag="x",
                                  headers=[("Event", "dialog;sla"), ("Subscription-State", "active")],
                                  body=info([]), content_type=CTYPE)
        assert (await stranger.send_request(forged)).status == 481
        assert await phone.tell(info([])) == 200               # the subscription is still there

        # an unREGISTER unsubscribes (in the dialog: the phone's To tag, Expires 0)
        await phone.register(server, expires=0)
        unsub = await c.expect_request("SUBSCRIBE", call_id=phone.sub.call_id, timeout=5)  # type: ignore[union-attr]
        assert unsub.header("Expires") == "0" and unsub.to.tag == phone.ok.to.tag  # type: ignore[union-attr]
        await c.reply(unsub, 200)
