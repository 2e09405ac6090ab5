"""`routescript run` as a registrar + proxy (save/lookup/t_relay) over real sockets, UDP and TCP, with 1
and 2 UDP workers: REGISTER -> 200 listing the bindings, a binding saved on one worker found right after
its 200 by a lookup() on the other, a call to a user with two phones (both ring, the first answer wins),
an unregistered user -> 404, a MESSAGE to a registered user, Expires 0 and `*` removal, 423, bad input."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))
from proxy_e2e import Proxy, free_port, start, uas

from routescript.sip import build_reply
from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio

SCRIPT = r"""
log_level = 3
stderror_enabled = yes
udp_workers = WORKERS
socket = udp:127.0.0.1:PORT
socket = tcp:127.0.0.1:PORT

loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", DBMODE)
DBURL
modparam("tm", "fr_timeout", 2)
modparam("tm", "fr_inv_timeout", 3)

route {
    if (is_method("REGISTER")) { save("location"); exit; }
    if (has_totag()) { sl_send_reply(404, "Not here"); exit; }
    if (is_method("CANCEL")) { if (t_check_trans()) t_relay(); exit; }
    if (is_method("ACK")) { if (t_check_trans()) t_relay(); exit; }
    if (!lookup("location")) { sl_send_reply(404, "Not Found"); exit; }
    if (!t_relay()) sl_reply_error();
}
"""


@pytest.fixture(scope="module", params=[(1, 0), (2, 0), (2, 1)],
                ids=["workers1", "workers2", "workers2-db1"])
def running(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    workers, mode = request.param
    tmp = tmp_path_factory.mktemp(f"reg{workers}{mode}")
    port = free_port()
    url = f'modparam("usrloc", "db_url", "sqlite://{tmp}/ul.sqlite")' if mode else ""
    cfg = tmp / "reg.cfg"
    cfg.write_text(SCRIPT.replace("WORKERS", str(workers)).replace("PORT", str(port))
                   .replace("DBMODE", str(mode)).replace("DBURL", url))
    server = start(cfg, tmp)
    if workers > 1:
        server.wait_for("routescript started", count=1)
    try:
        yield port, workers
    finally:
        server.stop()


@pytest.fixture(params=["udp", "tcp"])
def proxy(request: pytest.FixtureRequest, running: tuple[int, int]) -> Proxy:
    port, _ = running
    return Proxy(None, port, request.param)  # type: ignore[arg-type]


async def register(phone: SipTestClient, user: str, *, expires: int = 300, contact: str | None = None,
                   call_id: str | None = None, cseq: int = 1) -> object:
    aor = f"sip:{user}@example.com"
    req = phone.request("REGISTER", "sip:example.com", to=aor, from_=aor, contact=False, call_id=call_id,
                        cseq=cseq, headers=[("Contact", contact or f"<{phone.contact_uri}>"),
                                            ("Expires", str(expires))])
    return await phone.send_request(req)


async def test_register_lists_bindings_and_lookup_finds_them_on_any_worker(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "carol") as (caller,):
        for n in range(6):     # Call-IDs spread over the workers: some lookups run on the other one
            async with uas(proxy.proto, proxy, f"u{n}x") as (phone,):
                ok = await register(phone, f"user{n}")
                assert ok.status == 200  # type: ignore[attr-defined]
                assert any(phone.contact_uri in c for c in ok.header_all("contact"))  # type: ignore[attr-defined]
                msg = caller.request("MESSAGE", f"sip:user{n}@example.com", body=b"hi",
                                     content_type="text/plain")
                caller.send(msg)
                got = await phone.expect_request("MESSAGE", call_id=msg.call_id)
                assert got.body == b"hi" and got.ruri == phone.contact_uri
                phone._send_response(build_reply(got, 200, to_tag="m1"))
                final = await caller.expect_response(msg, final=True)
                assert final.status == 200
                assert (await register(phone, f"user{n}", expires=0, cseq=2)).status == 200  # type: ignore[attr-defined]
                gone = caller.request("MESSAGE", f"sip:user{n}@example.com", body=b"x",
                                      content_type="text/plain")
                assert (await caller.send_request(gone)).status == 404


async def test_call_to_two_phones_rings_both_and_first_answer_wins(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "alice") as (caller,), uas(proxy.proto, proxy, "bob", 2) as phones:
        for i, phone in enumerate(phones):
            assert (await register(phone, "bob2", call_id=f"bob2-reg-{i}-{proxy.proto}")).status == 200  # type: ignore[attr-defined]
        invite = caller.request("INVITE", "sip:bob2@example.com", body=b"v=0\r\n",
                                content_type="application/sdp")
        caller.send(invite)
        got = [await p.expect_request("INVITE", call_id=invite.call_id) for p in phones]
        for i, phone in enumerate(phones):   # both ring
            phone._send_response(build_reply(got[i], 180, to_tag=f"b{i}"))
        await caller.expect_response(invite, index=1)
        phones[1]._send_response(build_reply(got[1], 200, to_tag="b1",
                                             headers=[("Contact", f"<{phones[1].contact_uri}>")]))
        final = await caller.expect_response(invite, final=True)
        assert final.status == 200 and final.to.tag == "b1"
        cancel = await phones[0].expect_request("CANCEL", call_id=invite.call_id)
        phones[0]._send_response(build_reply(cancel, 200, to_tag="b0"))
        phones[0]._send_response(build_reply(got[0], 487, to_tag="b0"))
        caller.send(caller.ack(invite, final))


async def test_unregistered_user_gets_404(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "dave") as (caller,):
        req = caller.request("INVITE", "sip:nobody@example.com")
        assert (await caller.send_request(req)).status == 404


async def test_423_star_and_bad_input(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "erin") as (phone,):
        too_brief = await register(phone, "erin", expires=5)
        assert too_brief.status == 423 and too_brief.header("Min-Expires") == "60"  # type: ignore[attr-defined]
        assert (await register(phone, "erin", contact="<sip:erin@h>;q=9")).status == 400  # type: ignore[attr-defined]
        long = "<sip:" + "a" * 2000 + "@h>"
        assert (await register(phone, "erin", contact=long)).status == 400  # type: ignore[attr-defined]
        many = ", ".join(f"<sip:e{i}@10.0.0.{i % 250}>" for i in range(300))
        assert (await register(phone, "erin", contact=many)).status in (400, 513)  # type: ignore[attr-defined]
        huge = await register(phone, "erin", contact=f"<sip:erin@h>;expires={'9' * 40}")
        assert huge.status == 200  # type: ignore[attr-defined]
        assert (await register(phone, "erin", contact="*", expires=0, call_id="star", cseq=5)).status == 200  # type: ignore[attr-defined]
        req = phone.request("OPTIONS", "sip:erin@example.com")
        assert (await phone.send_request(req)).status == 404
        if proxy.proto == "tcp":
            # 10,000 Contacts (about 250 KB: only a stream carries it): 513, sent before the server
            # closes the broken stream (a lingering close: no reset eats the answer), nothing stored
            flood = ", ".join(f"<sip:e{i}@10.0.{i // 250}.{i % 250}>" for i in range(10_000))
            assert (await register(phone, "erin", contact=flood)).status == 513  # type: ignore[attr-defined]
    async with uas(proxy.proto, proxy, "erin2") as (caller,):
        req = caller.request("OPTIONS", "sip:erin@example.com")
        assert (await caller.send_request(req)).status == 404
