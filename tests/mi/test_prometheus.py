"""modules/prometheus: the /metrics page of a running Server, scraped over HTTP and parsed with
prometheus_client's own parser; names, types and groups as OpenSIPS's prometheus module makes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from routescript.core.server import LoadError, Server
from routescript.testing.client import SipTestClient

BASE = """
log_level = 1
socket = udp:127.0.0.1:0
loadmodule "sl.so"
loadmodule "httpd.so"
loadmodule "prometheus.so"
modparam("httpd", "ip", "127.0.0.1")
modparam("httpd", "port", 0)
{params}
route {{ sl_send_reply(200, "OK"); }}
"""

TIMEOUT = aiohttp.ClientTimeout(total=5)


async def start(tmp_path: Path, params: str) -> Server:
    cfg = tmp_path / "prom.cfg"
    cfg.write_text(BASE.format(params=params))
    server = Server()
    server.load(str(cfg))
    await server.start()
    return server


async def scrape(server: Server, path: str = "/metrics") -> dict[str, Any]:
    url = server.modules.get("httpd").url + path  # type: ignore[union-attr]
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    srv = await start(tmp_path, 'modparam("prometheus", "statistics", "all")')
    try:
        yield srv
    finally:
        await srv.stop()


async def test_all_statistics_with_opensips_names(server: Server) -> None:
    async with await SipTestClient.start("udp", (server.sockets[0].host, server.sockets[0].port)) as ua:
        for _ in range(5):
            assert (await ua.send_request(ua.options())).status == 200
    families = await scrape(server)
    rcv = families["opensips_rcv_requests"]
    assert rcv.type == "unknown"  # untyped, under the name OpenSIPS dashboards query (module docstring)
    assert rcv.samples[0].name == "opensips_rcv_requests" and rcv.samples[0].value >= 5
    assert families["opensips_2xx_replies"].samples[0].value == 5
    assert families["opensips_timestamp"].type == "gauge"
    assert families["opensips_tcp_connections"].type == "gauge"
    assert families["opensips_2xx_replies"].samples[0].labels == {}


async def test_group_in_name_and_selection(tmp_path: Path) -> None:
    srv = await start(tmp_path, '''
modparam("prometheus", "root", "prom")
modparam("prometheus", "prefix", "rs")
modparam("prometheus", "group_prefix", "g")
modparam("prometheus", "group_mode", 1)
modparam("prometheus", "statistics", "sl: rcv_requests")
modparam("prometheus", "statistics", "presence:active_watchers no_such_stat")
modparam("prometheus", "typed_counters", 1)
''')
    try:
        srv.statistics.register("presence", "active_watchers", func=lambda: 7)  # registered after start
        families = await scrape(srv, "/prom")
        assert set(families) == {"rs_gsl_1xx_replies", "rs_gsl_2xx_replies", "rs_gsl_3xx_replies",
                                 "rs_gsl_4xx_replies", "rs_gsl_5xx_replies", "rs_gsl_6xx_replies",
                                 "rs_gsl_sent_replies", "rs_gsl_sent_err_replies", "rs_gsl_received_ACKs",
                                 "rs_gcore_rcv_requests", "rs_gpresence_active_watchers"}
        rcv = families["rs_gcore_rcv_requests"]
        assert rcv.type == "counter" and rcv.samples[0].name == "rs_gcore_rcv_requests_total"
        assert families["rs_gpresence_active_watchers"].samples[0].value == 7
    finally:
        await srv.stop()


async def test_group_as_label(tmp_path: Path) -> None:
    srv = await start(tmp_path, '''
modparam("prometheus", "group_mode", 2)
modparam("prometheus", "group_label", "grp")
modparam("prometheus", "statistics", "core:")
''')
    try:
        families = await scrape(srv)
        assert families["opensips_rcv_requests"].samples[0].labels == {"grp": "core"}
        assert "opensips_2xx_replies" not in families  # sl: not selected
        url = srv.modules.get("httpd").url + "/metrics"  # type: ignore[union-attr]
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.post(url, data="x") as r:
            assert r.status == 405
    finally:
        await srv.stop()


async def test_nothing_selected_is_an_empty_page(tmp_path: Path) -> None:
    srv = await start(tmp_path, "")
    try:
        assert await scrape(srv) == {}
    finally:
        await srv.stop()


@pytest.mark.parametrize("line, message", [
    ('modparam("prometheus", "group_mode", 3)', "group_mode must be 0, 1 or 2"),
    ('modparam("prometheus", "labels", "grp: /^(.*)_(.*)$/\\\\1:gw=\\\\2/")', "not supported yet"),
    ('modparam("prometheus", "root", "a/b")', "bad root"),
])
def test_bad_parameters(tmp_path: Path, line: str, message: str) -> None:
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(BASE.format(params=line))
    with pytest.raises(LoadError) as info:
        Server().load(str(cfg))
    assert message in str(info.value)
