"""Mutation fuzz of `routescript run` (examples/presence.cfg with presence_xml, presence_dialoginfo,
presence_mwi and MI over HTTP, on SQLite): seeded mutations of valid PUBLISH / SUBSCRIBE / NOTIFY-answer
datagrams (sip_mutations.py) sent over UDP, paced by the server's answers. Afterwards the server must be
alive, answer a valid request, still build PIDF and watcherinfo bodies and MI listings of what the fuzz
left stored, and have logged no traceback (issue 15: a 200,000-datagram run found 186 tracebacks of a
Call-ID with a control character breaking every later watcherinfo document).

Bounded (a few thousand datagrams, well under 30 s on a quiet machine) and reproducible: the datagrams
depend only on the seed, which is printed. Long runs:

    RS_FUZZ_DATAGRAMS=200000 RS_FUZZ_SEED=7 .venv/bin/python -m pytest -s tests/e2e/test_mutation_fuzz_e2e.py
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from presence_e2e import Srv, free_port, presence_cfg, run_server
from sip_mutations import MutationSource, sendable

from routescript.mi.client import call_http
from routescript.modules.presence_xml.winfo import parse_winfo
from routescript.sip import ParseError, SIPRequest, parse_message
from routescript.testing import pidf

pytestmark = pytest.mark.asyncio

DATAGRAMS = int(os.environ.get("RS_FUZZ_DATAGRAMS", "3000"))
SEED = int(os.environ.get("RS_FUZZ_SEED", "20261207"))
BATCH = 32            # datagrams sent before waiting for the server to catch up
QUIET = 0.02          # the server has caught up when it sent nothing for this long...
MAX_WAIT = 0.5        # ...or after this long

MODULES = """loadmodule "presence_dialoginfo.so"
loadmodule "presence_mwi.so"
"""   # httpd + mi_http come with the example


class Peer(asyncio.DatagramProtocol):
    """The fuzzer's UDP socket: answers the server's NOTIFYs (MutationSource.answer_notify), learns the
    dialogs its SUBSCRIBEs made, counts what comes back."""

    def __init__(self, source: MutationSource, server: tuple[str, int]) -> None:
        self.source, self.server = source, server
        self.transport: asyncio.DatagramTransport | None = None
        self.heard = asyncio.Event()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.notifies = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.heard.set()
        try:
            msg = parse_message(data)
        except ParseError:
            self.statuses[0] += 1   # an answer copying our bad bytes (our own parser refuses it)
            return
        if isinstance(msg, SIPRequest):
            if msg.method == "NOTIFY" and self.transport is not None:
                self.notifies += 1
                self.transport.sendto(self.source.answer_notify(msg), addr)
            return
        self.statuses[msg.status] += 1
        self.source.learn(data)

    async def caught_up(self) -> None:
        """Wait until the server has sent nothing for QUIET seconds (at most MAX_WAIT)."""
        deadline = time.monotonic() + MAX_WAIT
        while (remaining := deadline - time.monotonic()) > 0:
            self.heard.clear()
            try:
                await asyncio.wait_for(self.heard.wait(), min(QUIET, remaining))
            except TimeoutError:
                return


def mi(url: str, method: str) -> Any:
    return call_http(url, method, None, timeout=5)


async def test_mutation_fuzz_leaves_the_server_whole(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    cfg = presence_cfg(tmp_path, port, presence={"clean_period": 2}, http_port=http_port)
    xml = 'loadmodule "presence_xml.so"\n'
    text = cfg.read_text().replace(xml, xml + MODULES, 1)
    cfg.write_text(text)
    mi_url = f"http://127.0.0.1:{http_port}/mi"
    print(f"mutation fuzz: seed={SEED} datagrams={DATAGRAMS} (RS_FUZZ_SEED / RS_FUZZ_DATAGRAMS to change)")
    with run_server(cfg, tmp_path) as server:
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(
            lambda: Peer(MutationSource(SEED, port, 0), ("127.0.0.1", port)), local_addr=("127.0.0.1", 0))
        peer.source.local_port = transport.get_extra_info("sockname")[1]
        started, sent, skipped = time.monotonic(), 0, 0
        try:
            for i in range(DATAGRAMS):
                datagram = peer.source.next()
                if not sendable(datagram):
                    skipped += 1   # it would make the server send off loopback
                    continue
                transport.sendto(datagram, ("127.0.0.1", port))
                sent += 1
                if i % BATCH == BATCH - 1:
                    await peer.caught_up()
                    assert server.proc.poll() is None, f"seed {SEED}: the server died after datagram {i}"
            await peer.caught_up()
            elapsed = time.monotonic() - started
            print(f"mutation fuzz: {sent} sent, {skipped} not sent (off loopback), {elapsed:.1f} s; "
                  f"answers {dict(sorted(peer.statuses.items()))}; {peer.notifies} NOTIFYs answered; "
                  f"{len(peer.source.dialogs)} dialogs learnt")
            await check_whole(Srv(server, port), mi_url)
        finally:
            transport.close()
        log = server.log()
        assert server.proc.poll() is None, f"seed {SEED}: the server died:\n{log[-3000:]}"
        assert "Traceback" not in log, f"seed {SEED}: a traceback in the log:\n" + _around(log, "Traceback")
    # the fuzz must have reached the handlers, not only the parser
    assert peer.statuses[200] > 0 and peer.statuses[400] > 0 and peer.notifies > 0, peer.statuses


async def check_whole(srv: Srv, mi_url: str) -> None:
    """The server answers valid requests and builds every body: OPTIONS, a PIDF, the watcher list of a
    fuzzed presentity (its watchers were stored by the fuzz), and the MI listings."""
    async with await srv.client("alice") as alice, await srv.client("zed") as zed, \
            await srv.client("yan") as yan:
        for c in (alice, zed, yan):
            c.auto_reply["NOTIFY"] = 200
        assert (await yan.send_request(yan.options(srv.uri("zed")))).status == 200
        published = await zed.send_request(zed.publish(srv.uri("zed"), pidf(zed.aor, note="after fuzz")))
        assert published.status == 200
        sub = yan.subscribe(srv.uri("zed"))
        assert (await yan.send_request(sub)).status == 200
        n = await yan.expect_request("NOTIFY", call_id=sub.call_id)
        assert b"<note>after fuzz</note>" in n.body
        ws = alice.subscribe(srv.uri("alice"), event="presence.winfo", accept="application/watcherinfo+xml")
        assert (await alice.send_request(ws)).status == 200
        n = await alice.expect_request("NOTIFY", call_id=ws.call_id)
        _, state, resource, watchers = parse_winfo(n.body)
        assert (state, resource) == ("full", "sip:alice@127.0.0.1")
        for w in watchers:
            assert w.id and w.uri.startswith("sip:")
        etree.fromstring(n.body)
    presentities = await asyncio.to_thread(mi, mi_url, "pres_phtable_list")
    subscriptions = await asyncio.to_thread(mi, mi_url, "subs_phtable_list")
    assert isinstance(presentities, list) and isinstance(subscriptions, list)
    assert any(p["pres_uri"] == "sip:zed@127.0.0.1" for p in presentities)
    print(f"mutation fuzz: after it {len(presentities)} presentities, {len(subscriptions)} subscriptions "
          f"listed over MI; alice's watcher list has {len(watchers)} watchers")


def _around(log: str, text: str, before: int = 1500, after: int = 2500) -> str:
    at = log.find(text)
    return log[max(0, at - before):at + after]


async def test_notify_too_large_for_udp_times_out_cleanly(tmp_path: Path) -> None:
    """Found by a 200,000-datagram run: a presentity whose aggregated PIDF outgrew 64 KiB. Its NOTIFY
    cannot go over UDP, so Timer F fires; making the local 408 re-read the NOTIFY under the peer's size
    bound raised inside the transaction timer callback (a traceback, and the timers of every other
    transaction left unarmed). max_aggregated_body_size now refuses such a state by default; raised
    here, the NOTIFY goes over TCP, which this watcher does not take, and its subscription ends with a
    logged reason - quietly, the server serving on."""
    port = free_port()
    cfg = presence_cfg(tmp_path, port, tm={"fr_timeout": 1}, presence={"max_aggregated_body_size": 200_000})
    with run_server(cfg, tmp_path) as server:
        srv = Srv(server, port)
        async with await srv.client("big") as big, await srv.client("wes") as wes:
            for device in range(16):   # 16 devices of ~4.6 KB each: about 74 KB aggregated
                body = pidf(big.aor, note="n" * 4500, tuple_id=f"dev{device}")
                assert (await big.send_request(big.publish(srv.uri("big"), body))).status == 200
            sub = wes.subscribe(srv.uri("big"))
            assert (await wes.send_request(sub)).status == 200
            server.wait_for("told terminated;reason=probation", timeout=10)
            assert (await wes.send_request(wes.options(srv.uri("big")))).status == 200
        assert "Traceback" not in server.log()
