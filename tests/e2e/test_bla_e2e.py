"""examples/bla.cfg over `routescript run`: BLA (`Event: dialog;sla`) - the presentity of a BLA SUBSCRIBE
(Contact user @ From domain, or bla_presentity_spec's $var(bla_pres) set by the script: user@host of its
URI, 400 for a non-URI or empty value), NOTIFY bodies aggregated with a per-watcher version, the
publishing phone (Sender) left out, and bla_fix_remote_target."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from lxml import etree
from presence_e2e import ROOT, Srv, free_port, presence_cfg, run_server

from routescript.testing import SipTestClient

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio

EXAMPLE = ROOT / "examples" / "bla.cfg"
CTYPE = "application/dialog-info+xml"
NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}


def dialog_info(entity: str, dialog_id: str, state: str = "confirmed", *, target: str | None = None,
                identity: str | None = None) -> bytes:
    remote = ""
    if target or identity:
        remote = "<remote>" + (f"<identity>{identity}</identity>" if identity else "") + \
                 (f'<target uri="{target}"/>' if target else "") + "</remote>"
    return (f'<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" '
            f'state="full" entity="{entity}"><dialog id="{dialog_id}" call-id="c-{dialog_id}" '
            f'direction="initiator"><state>{state}</state>{remote}</dialog></dialog-info>').encode()


def dialogs(body: bytes) -> list[str]:
    return [d.get("id") for d in etree.fromstring(body).findall("d:dialog", NS)]


class Phones(Srv):
    answer_notify = True  # the phones only read the NOTIFY bodies


def _srv(tmp_path_factory: pytest.TempPathFactory, name: str, db: TestDb,
         **presence: object) -> Iterator[Phones]:
    tmp = tmp_path_factory.mktemp(name)
    port = free_port()
    cfg = presence_cfg(tmp, port, db_url=db.url, example=EXAMPLE, name="bla.cfg", presence=presence or None)
    with run_server(cfg, tmp) as server:
        yield Phones(server, port)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, presence_dbs: Callable[[], TestDb]) -> Iterator[Phones]:
    yield from _srv(tmp_path_factory, "bla", presence_dbs())


@pytest.fixture(scope="module")
def srv_nofix(tmp_path_factory: pytest.TempPathFactory,
              presence_dbs: Callable[[], TestDb]) -> Iterator[Phones]:
    yield from _srv(tmp_path_factory, "bla-nofix", presence_dbs(), bla_fix_remote_target=0)


async def sla_subscribe(phone: SipTestClient, uri: str, headers: tuple[tuple[str, str], ...] = ()):  # type: ignore[no-untyped-def]
    sub = phone.subscribe(uri, event="dialog;sla", accept=CTYPE, headers=headers)
    return sub, await phone.send_request(sub)


def sla_publish(phone: SipTestClient, uri: str, body: bytes, *, event: str = "dialog;sla",
                sender: bool = True, etag: str | None = None):  # type: ignore[no-untyped-def]
    headers = [("Sender", phone.contact_uri)] if sender else []
    return phone.publish(uri, body, event=event, content_type=CTYPE, expires=600, headers=headers, etag=etag)


async def test_default_presentity_sender_left_out_versions_grow(srv: Phones) -> None:
    """No bla_pres set: the line is Contact user (201) @ From domain; the Request-URI does not matter."""
    async with await srv.client("201") as desk, await srv.client("201") as lobby:
        s_desk, r = await sla_subscribe(desk, srv.uri("anything"))
        assert r.status == 200
        n = await desk.expect_request("NOTIFY", call_id=s_desk.call_id)
        assert n.header("Subscription-State") == "active;expires=600" and n.body == b""   # measured: no body
        s_lobby, r = await sla_subscribe(lobby, srv.uri("201"))
        assert r.status == 200
        await lobby.expect_request("NOTIFY", call_id=s_lobby.call_id)
        # the lobby phone takes a call on the line: the desk phone hears of it, the lobby phone does not
        r1 = await lobby.send_request(sla_publish(lobby, srv.uri("201"),
                                                  dialog_info("sip:201@127.0.0.1", "l1")))
        assert r1.status == 200
        n = await desk.expect_request("NOTIFY", call_id=s_desk.call_id)
        assert n.header("Content-Type") == CTYPE and dialogs(n.body) == ["l1"]
        root = etree.fromstring(n.body)
        assert root.get("version") == "1" and root.get("entity") == "sip:201@127.0.0.1"
        await lobby.expect_no_request("NOTIFY", call_id=s_lobby.call_id, within=0.3)
        # the desk phone publishes too: one document with both dialogs, the lobby phone is told this time
        r2 = await desk.send_request(sla_publish(desk, srv.uri("201"),
                                                 dialog_info("sip:201@127.0.0.1", "d1")))
        assert r2.status == 200
        n = await lobby.expect_request("NOTIFY", call_id=s_lobby.call_id)
        assert sorted(dialogs(n.body)) == ["d1", "l1"]
        assert etree.fromstring(n.body).get("version") == "1"
        await desk.expect_no_request("NOTIFY", call_id=s_desk.call_id, within=0.3)
        # a publisher without Sender: everyone, each with its own next version
        await desk.send_request(sla_publish(desk, srv.uri("201"),
                                            dialog_info("sip:201@127.0.0.1", "d1", "terminated"),
                                            sender=False, etag=r2.header("SIP-ETag")))
        n_desk = await desk.expect_request("NOTIFY", call_id=s_desk.call_id)
        n_lobby = await lobby.expect_request("NOTIFY", call_id=s_lobby.call_id)
        assert etree.fromstring(n_desk.body).get("version") == "2"
        assert etree.fromstring(n_lobby.body).get("version") == "2"
        # etag_not_new (as OpenSIPS registers dialog;sla): the ETag survives a modify
        assert r2.header("SIP-ETag")


async def test_presentity_from_bla_presentity_spec(srv: Phones) -> None:
    """$var(bla_pres) set by the script: user@host of the URI (port, params dropped). A dialog;sla
    PUBLISH to that line reaches the watcher; a plain dialog PUBLISH does not."""
    async with await srv.client("phone9") as phone, await srv.client("line7") as other:
        sub, r = await sla_subscribe(phone, srv.uri("whatever"),
                                     headers=(("X-BLA-Line", "sip:line7@Example.com:5070;transport=udp"),))
        assert r.status == 200
        await phone.expect_request("NOTIFY", call_id=sub.call_id)
        r = await other.send_request(sla_publish(other, "sip:line7@example.com",
                                                 dialog_info("sip:line7@example.com", "x1"),
                                                 event="dialog", sender=False))
        assert r.status == 200
        await phone.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.3)
        r = await other.send_request(sla_publish(other, "sip:line7@example.com",
                                                 dialog_info("sip:line7@example.com", "s1"), sender=False))
        assert r.status == 200
        n = await phone.expect_request("NOTIFY", call_id=sub.call_id)
        assert dialogs(n.body) == ["s1"] and etree.fromstring(n.body).get("entity") == "sip:line7@example.com"


@pytest.mark.parametrize("value", ["not a uri", "<sip:line7@example.com>", "tel:+123", ""])
async def test_bad_bla_presentity_is_400(srv: Phones, value: str) -> None:
    async with await srv.client("p1") as phone:
        _sub, r = await sla_subscribe(phone, srv.uri("x"), headers=(("X-BLA-Line", value),))
        assert r.status == 400


async def test_remote_target_fixed(srv: Phones, srv_nofix: Phones) -> None:
    body = dialog_info("sip:301@127.0.0.1", "h1", target="sip:bob@10.0.0.9:5062",
                       identity="sip:bob@example.com")
    for server, expected in ((srv, "sip:bob@example.com"), (srv_nofix, "sip:bob@10.0.0.9:5062")):
        async with await server.client("301") as watcher, await server.client("301") as holder:
            sub, r = await sla_subscribe(watcher, server.uri("301"))
            assert r.status == 200
            await watcher.expect_request("NOTIFY", call_id=sub.call_id)
            await holder.send_request(sla_publish(holder, server.uri("301"), body))
            n = await watcher.expect_request("NOTIFY", call_id=sub.call_id)
            target = etree.fromstring(n.body).find("d:dialog/d:remote/d:target", NS)
            assert target is not None and target.get("uri") == expected
