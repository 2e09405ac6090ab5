"""Caps on stored state and on TCP connections (issue 15), against `routescript run examples/presence.cfg`
over real sockets: one client could create 50,000 subscriptions, and 2,048 idle TCP connections from one
address locked every other TCP client out.

Clients come from different loopback addresses (127.0.0.1, 127.0.0.2, ...: Linux routes all of
127.0.0.0/8 to lo), so the per-address caps see different sources."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from presence_e2e import Srv, free_port, presence_cfg, run_server

from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio

RETRY_AFTER = "60"   # modules/presence/limits.py CAP_RETRY_AFTER


def with_globals(cfg: Path, **values: object) -> Path:
    """The config with core parameters added after its last socket= line."""
    text = cfg.read_text()
    lines = "".join(f"{name} = {value}\n" for name, value in values.items())
    last = [m.end() for m in re.finditer(r"^socket = [^\n]*\n", text, re.M)][-1]
    cfg.write_text(text[:last] + lines + text[last:])
    return cfg


@contextlib.asynccontextmanager
async def client(srv: Srv, host: str, user: str = "w", proto: str = "udp") -> AsyncIterator[SipTestClient]:
    """A test client sending from loopback address `host`, answering every NOTIFY 200."""
    c = await SipTestClient.start(proto, ("127.0.0.1", srv.port), local_host=host, user=user, timeout=3)
    c.auto_reply["NOTIFY"] = 200
    try:
        yield c
    finally:
        await c.close()


async def logged(srv: Srv, text: str, *, count: int = 1, timeout: float = 5.0) -> None:
    """Wait until the server logged `text` `count` times, without blocking the loop (the clients on it
    must go on answering NOTIFYs)."""
    deadline = time.monotonic() + timeout
    while srv.server.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times:\n{srv.server.log()}"
        await asyncio.sleep(0.05)


async def subscribe(c: SipTestClient, srv: Srv, user: str, expires: int = 600) -> tuple[int, str | None]:
    resp = await c.send_request(c.subscribe(srv.uri(user), expires=expires))
    return resp.status, resp.header("Retry-After")


@pytest.fixture
def per_source(tmp_path: Path) -> Iterator[Srv]:
    port = free_port()
    cfg = presence_cfg(tmp_path, port, presence={"max_subscriptions_per_source": 3, "clean_period": 1,
                                                 "trusted_sources": "127.0.0.3, 10.0.0.0/8"},
                       tm={"fr_timeout": 1})
    with run_server(cfg, tmp_path) as server:
        yield Srv(server, port)


async def test_subscriptions_per_source_address(per_source: Srv) -> None:
    """One address gets 503 + Retry-After over max_subscriptions_per_source while another address, and a
    trusted one above the cap, still get 200; refreshes are never refused; an unsubscribe, an expiry and
    a NOTIFY answered 481 free the slot; the refusals give one log line, not one each."""
    srv = per_source
    async with client(srv, "127.0.0.1") as a, client(srv, "127.0.0.2") as b, \
            client(srv, "127.0.0.3") as trusted:
        dialogs = []
        for i in range(3):
            req = a.subscribe(srv.uri(f"p{i}"))
            resp = await a.send_request(req)
            assert resp.status == 200
            dialogs.append(a.dialog(req, resp))
        assert await subscribe(a, srv, "p3") == (503, RETRY_AFTER)
        assert await subscribe(b, srv, "p3") == (200, None)
        for i in range(5):
            assert await subscribe(trusted, srv, f"p{i}") == (200, None)

        refresh = await a.send_request(a.subscribe(event="presence", expires=300, dialog=dialogs[0]))
        assert refresh.status == 200                                    # held: never refused
        assert await subscribe(a, srv, "p3") == (503, RETRY_AFTER)       # and it did not count twice

        unsubscribe = await a.send_request(a.subscribe(event="presence", expires=0, dialog=dialogs[0]))
        assert unsubscribe.status == 200
        assert await subscribe(a, srv, "p4", expires=1) == (200, None)   # the freed slot; expires soon
        assert (await subscribe(a, srv, "p5"))[0] == 503
        deadline = time.monotonic() + 6                                 # clean_period 1 ends it
        while (status := (await subscribe(a, srv, "p5"))[0]) != 200:
            assert status == 503 and time.monotonic() < deadline, "the expired subscription kept its slot"
            await asyncio.sleep(0.3)

    log = srv.server.log()
    assert log.count("max_subscriptions_per_source (3) reached for 127.0.0.1") == 1, log
    assert not re.search(r"from udp:127\.0\.0\.[23]:\d+ .*refused", log), log    # another, trusted

    async with client(srv, "127.0.0.4") as gone:
        gone.auto_reply["NOTIFY"] = 481                                 # "this dialog is gone"
        for i in range(3):
            assert await subscribe(gone, srv, f"q{i}") == (200, None)
        await logged(srv, "NOTIFY answered 481", count=3)
        for i in range(3):
            assert await subscribe(gone, srv, f"r{i}") == (200, None)


@pytest.fixture
def totals(tmp_path: Path) -> Iterator[Srv]:
    port = free_port()
    cfg = presence_cfg(tmp_path, port, presence={"max_subscriptions": 3, "max_presentities": 2,
                                                 "trusted_sources": "127.0.0.0/8"})
    with run_server(cfg, tmp_path) as server:
        yield Srv(server, port)


async def test_total_subscriptions_and_publications(totals: Srv) -> None:
    """max_subscriptions and max_presentities bite whatever the address (trusted ones too); a fetch stores
    nothing and still works; refreshing, modifying and removing a publication are never refused, and a
    removal frees its place."""
    srv = totals
    async with client(srv, "127.0.0.1", "alice") as a, client(srv, "127.0.0.2", "bob") as b:
        for c, user in ((a, "p0"), (a, "p1"), (b, "p2")):
            assert await subscribe(c, srv, user) == (200, None)
        assert await subscribe(a, srv, "p3") == (503, RETRY_AFTER)
        assert await subscribe(b, srv, "p3") == (503, RETRY_AFTER)
        assert await subscribe(b, srv, "p3", expires=0) == (200, None)   # a fetch keeps nothing

        first = await a.send_request(a.publish(srv.uri("alice"), pidf(a.aor, note="in")))
        assert first.status == 200
        second = await b.send_request(b.publish(srv.uri("bob"), pidf(b.aor, note="in")))
        assert second.status == 200
        over = await b.send_request(b.publish(srv.uri("carol"), pidf(b.aor, note="in")))
        assert (over.status, over.header("Retry-After")) == (503, RETRY_AFTER)
        refresh = await a.send_request(a.publish(srv.uri("alice"), etag=first.header("SIP-ETag")))
        assert refresh.status == 200
        modify = await a.send_request(a.publish(srv.uri("alice"), pidf(a.aor, note="out"),
                                                etag=refresh.header("SIP-ETag")))
        assert modify.status == 200
        remove = await b.send_request(b.publish(srv.uri("bob"), etag=second.header("SIP-ETag"), expires=0))
        assert remove.status == 200
        again = await b.send_request(b.publish(srv.uri("carol"), pidf(b.aor, note="in")))
        assert again.status == 200

    log = srv.server.log()
    assert log.count("max_subscriptions (3) reached") == 1, log            # two refusals, one line
    assert re.search(r"PUBLISH \S+ from udp:127\.0\.0\.2:\d+ for sip:carol@127\.0\.0\.1 refused 503: "
                     r"max_presentities \(2\) reached", log), log


async def test_subscriptions_loaded_at_start_count(tmp_path: Path, presence_db: TestDb) -> None:
    """After a restart the subscriptions read back from the database fill max_subscriptions as they did
    before (an in-dialog refresh of one of them is still served)."""
    port = free_port()
    cfg = presence_cfg(tmp_path, port, db_url=presence_db.url, presence={"max_subscriptions": 2})
    with run_server(cfg, tmp_path) as server:
        srv = Srv(server, port)
        async with client(srv, "127.0.0.1") as a:
            req = a.subscribe(srv.uri("p0"))
            resp = await a.send_request(req)
            assert resp.status == 200
            dialog = a.dialog(req, resp)
            assert await subscribe(a, srv, "p1") == (200, None)
    with run_server(cfg, tmp_path) as server:   # SIGTERM above flushed both to the database
        srv = Srv(server, port)
        await logged(srv, "2 subscriptions loaded")
        async with client(srv, "127.0.0.2") as b:
            assert await subscribe(b, srv, "p2") == (503, RETRY_AFTER)
        async with client(srv, "127.0.0.1") as a:
            refresh = await a.send_request(a.subscribe(event="presence", expires=300, dialog=dialog))
            assert refresh.status == 200


async def _closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server closed the connection within `timeout` (EOF or a reset)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def test_tcp_connections_from_one_address_do_not_lock_others_out(tmp_path: Path) -> None:
    """Idle connections from one address fill tcp_max_connections; the ones over
    tcp_max_connections_per_ip are closed at accept (one log line), so a client from another address is
    still served. A message trickled slower than tcp_max_msg_time loses its connection; an idle one does
    not (tcp_connection_lifetime governs it)."""
    port = free_port()
    cfg = with_globals(presence_cfg(tmp_path, port), tcp_max_connections=12, tcp_max_connections_per_ip=4,
                       tcp_max_msg_time=1)
    with run_server(cfg, tmp_path) as server:
        srv = Srv(server, port)
        flood = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0))
                 for _ in range(12)]
        try:
            await asyncio.sleep(0.3)   # the server accepts them all
            async with client(srv, "127.0.0.2", proto="tcp") as other:
                assert (await other.send_request(other.options())).status == 200
            closed = [await _closed(reader, 0.5) for reader, _ in flood]
            assert closed.count(True) == 8 and closed[:4] == [False] * 4
            assert server.log().count("(tcp_max_connections_per_ip)") == 1

            slow_reader, slow = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
            slow.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.3:9;branch=z9hG4bKs\r\n")
            assert await _closed(slow_reader, 4.0)
            await logged(srv, "tcp_max_msg_time 1 s", timeout=2)
            reader, writer = flood[0]                       # idle since it opened: still served
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        finally:
            for _, writer in flood:
                writer.close()
