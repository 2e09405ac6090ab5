"""The event-package module API end to end: examples/modules/presence_example ("x-example") installed the way
a third-party distribution is - a dist-info with a `routescript.modules` entry point on the path - loaded
by `loadmodule "presence_example.so"` into `routescript run`, then PUBLISH + SUBSCRIBE on its event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from presence_e2e import ROOT, Srv, free_port, presence_cfg, run_server

from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio


def install_entry_point(site: Path) -> None:
    """What `pip install` of a distribution declaring the entry point leaves behind."""
    dist = site / "routescript_presence_example-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: routescript-presence-example\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text("[routescript.modules]\npresence_example = presence_example\n")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp("xexample")
    install_entry_point(tmp / "site")
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", f"{tmp / 'site'}:{ROOT / 'examples' / 'modules'}")
    port = free_port()
    cfg = presence_cfg(tmp, port, modparams={"presence_example": {"default_expires": 120}})
    cfg.write_text(cfg.read_text().replace('loadmodule "presence_xml.so"',
                                           'loadmodule "presence_xml.so"\nloadmodule "presence_example.so"'))
    try:
        with run_server(cfg, tmp) as server:
            yield Srv(server, port)
    finally:
        mp.undo()


def publish(c: SipTestClient, uri: str, text: bytes, **kw: object):  # type: ignore[no-untyped-def]
    return c.publish(uri, text, event="x-example", content_type="text/plain", **kw)


async def test_publish_and_subscribe_on_the_new_event(srv: Srv) -> None:
    async with await srv.client("uma") as phone, await srv.client("uma") as laptop, \
            await srv.client("vic") as vic:
        vic.auto_reply["NOTIFY"] = 200
        r = await phone.send_request(publish(phone, srv.uri("uma"), b"on a call"))
        assert r.status == 200 and r.header("SIP-ETag")
        sub = vic.subscribe(srv.uri("uma"), event="x-example", expires=None)
        resp = await vic.send_request(sub)
        assert resp.status == 200 and resp.header("Expires") == "120"     # the package's default_expires
        n = await vic.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.header("Event") == "x-example" and n.header("Content-Type") == "text/plain"
        assert n.body == b"seq: 0\non a call\n"
        await laptop.send_request(publish(laptop, srv.uri("uma"), b"typing"))
        n = await vic.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.body == b"seq: 1\non a call\ntyping\n"                    # agg_nbody + aux_body_processing
        await phone.send_request(publish(phone, srv.uri("uma"), None, expires=0, etag=r.header("SIP-ETag")))
        n = await vic.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.body == b"seq: 2\ntyping\n"


async def test_package_checks_bodies_and_is_listed(srv: Srv) -> None:
    async with await srv.client("wes") as wes:
        r = await wes.send_request(publish(wes, srv.uri("wes"), b"two\nlines"))
        assert r.status == 400                                              # evs_publ_handl
        r = await wes.send_request(wes.publish(srv.uri("wes"), b"x", event="x-unknown",
                                               content_type="text/plain"))
        assert r.status == 489 and "x-example" in (r.header("Allow-Events") or "")
        sub = wes.subscribe(srv.uri("nobody"), event="x-example")
        await wes.send_request(sub)
        n = await wes.expect_request("NOTIFY", call_id=sub.call_id)
        await wes.reply(n)
        assert n.body == b"seq: 0\n(nothing)\n"                           # mandatory_body
