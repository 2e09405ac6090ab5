"""t_relay with RFC 3263 resolution through the server's DnsResolver (a DNS server on loopback and a
hosts file, no network): failover to the next SRV target when the first one never answers, a name from
the hosts file, an unresolvable name answered 478 by t_relay itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from proxy_e2e import PROXY_SCRIPT, Proxy, free_port, start, uas, write_cfg

from routescript.testing.dns_server import DnsTestServer

pytestmark = pytest.mark.asyncio


async def test_srv_failover_hosts_file_and_unresolvable(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    async with DnsTestServer() as dns:
        port = free_port()
        script = PROXY_SCRIPT.replace(
            "socket = udp:127.0.0.1:PORT",
            f'dns_nameservers = "127.0.0.1:{dns.port}"\ndns_hosts_file = "{hosts}"\n'
            "socket = udp:127.0.0.1:PORT")
        proxy = Proxy(None, port, "udp")  # type: ignore[arg-type]
        # the callee's port is known once it is started: the hosts file and the zone are written then
        hosts.write_text("127.0.0.1 hosts.test\n")
        server = await asyncio.to_thread(start, write_cfg(tmp_path, port, 1, script), tmp_path)
        proxy.server = server
        try:
            async with uas("udp", proxy, "vic") as (caller,), uas("udp", proxy, "wes") as (callee,):
                dead = free_port()                        # nobody answers there: fr_timeout (2 s)
                dns.add("_sip._udp.fail.test", "SRV", f"10 0 {dead} dead.test.")
                dns.add("_sip._udp.fail.test", "SRV", f"20 0 {callee.local_port} live.test.")
                dns.add("fail.test", "TXT", '"the domain exists"')   # (the test server: no empty names)
                dns.add("dead.test", "A", "127.0.0.1")
                dns.add("live.test", "A", "127.0.0.1")
                message = caller.request("MESSAGE", "sip:wes@fail.test", body=b"hi",
                                         content_type="text/plain")
                caller.send(message)
                got = await callee.expect_request("MESSAGE", call_id=message.call_id, timeout=5.0)
                assert got.ruri == "sip:wes@fail.test"
                await callee.reply(got, 200)
                assert (await caller.expect_response(message, final=True, timeout=5.0)).status == 200
                assert ("_sip._udp.fail.test", "SRV") in dns.queries
                assert "failing over to the next target" in server.log()

                by_hosts = caller.request("MESSAGE", f"sip:wes@hosts.test:{callee.local_port}", body=b"x",
                                          content_type="text/plain")
                caller.send(by_hosts)
                got = await callee.expect_request("MESSAGE", call_id=by_hosts.call_id)
                await callee.reply(got, 202)
                assert (await caller.expect_response(by_hosts, final=True)).status == 202
                assert not [q for q in dns.queries if q[0] == "hosts.test"]

                nowhere = caller.request("MESSAGE", "sip:wes@nowhere.test", body=b"x",
                                         content_type="text/plain")
                caller.send(nowhere)
                final = await caller.expect_response(nowhere, final=True, timeout=5.0)
                assert (final.status, final.reason) == (478, "Unresolvable destination")
        finally:
            server.stop()
