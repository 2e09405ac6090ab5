"""Reloading the routes under continuous traffic: in-process (server.reload_routes) and through SIGHUP
on `routescript run`. The behaviour changes, no request goes unanswered, an invalid script is refused
with its errors while the old one keeps running, and module state survives."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from rs_e2e import RunningServer, free_port

from routescript.core.server import Server
from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio

SCRIPT = """
socket = udp:127.0.0.1:{port}
log_level = 2
loadmodule "sl.so"
loadmodule "sipmsgops.so"
route {{
    if (is_method("OPTIONS")) {{
        sl_send_reply(200, "{reason}");
        exit;
    }}
    sl_send_reply(405, "Method Not Allowed");
}}
"""

INVALID = """
socket = udp:127.0.0.1:{port}
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "maxfwd.so"
route {{
    sl_send_reply(200, "Version C");
    no_such_function();
}}
"""


class Traffic:
    """Workers sending OPTIONS back to back; every reason phrase is recorded, every request must be
    answered (a SipTimeout fails the test)."""

    def __init__(self, client: SipTestClient, workers: int = 3) -> None:
        self.client = client
        self.reasons: list[str] = []
        self.sent = 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._run()) for _ in range(workers)]

    async def _run(self) -> None:
        while not self._stop.is_set():
            req = self.client.options()
            self.sent += 1
            resp = await self.client.send_request(req, timeout=3)
            self.reasons.append(resp.reason)
            await asyncio.sleep(0.002)

    async def until(self, reason: str, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        start = len(self.reasons)
        while reason not in self.reasons[start:]:
            assert loop.time() < deadline, f"{reason!r} never seen; got {set(self.reasons[start:])}"
            for t in self._tasks:
                if t.done():
                    t.result()
            await asyncio.sleep(0.01)

    async def finish(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)           # re-raises a lost request (SipTimeout)
        assert len(self.reasons) == self.sent


async def test_reload_routes_in_process(tmp_path: Path) -> None:
    cfg = tmp_path / "live.cfg"
    cfg.write_text(SCRIPT.format(port=0, reason="Version A"))
    server = Server()
    server.load(str(cfg))
    await server.start()
    try:
        sl = server.modules.get("sl")
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            traffic = Traffic(client)
            await traffic.until("Version A")
            cfg.write_text(SCRIPT.format(port=0, reason="Version B"))
            assert await server.reload_routes() == []
            await traffic.until("Version B")
            cfg.write_text(INVALID.format(port=0))
            diags = await server.reload_routes()
            errors = [d for d in diags if d.severity == "error"]
            assert errors and "no_such_function" in str(errors[0]) and f"{cfg}:8:5" in str(errors[0])
            await asyncio.sleep(0.1)
            await traffic.until("Version B")
            await traffic.finish()
            assert "Version C" not in traffic.reasons
            after_a = traffic.reasons.index("Version B")
            assert all(r == "Version B" for r in traffic.reasons[after_a + 3:])
        # module instances survive a reload; module changes are warnings, not applied
        cfg.write_text(SCRIPT.format(port=0, reason="Version D").replace(
            'loadmodule "sl.so"', 'loadmodule "sl.so"\nloadmodule "tm.so"'))
        warnings = await server.reload_routes()
        assert server.modules.get("sl") is sl and server.modules.get("tm") is None
        assert any("loadmodule" in str(w) and "ignored" in str(w) for w in warnings)
    finally:
        await server.stop()


async def test_sighup_reload_under_traffic(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "hup.cfg"
    cfg.write_text(SCRIPT.format(port=port, reason="Version A"))
    proc = RunningServer(cfg, tmp_path)
    try:
        proc.wait_for("routescript started")
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            traffic = Traffic(client)
            await traffic.until("Version A")
            cfg.write_text(SCRIPT.format(port=port, reason="Version B"))
            proc.signal(signal.SIGHUP)
            await traffic.until("Version B")
            cfg.write_text(INVALID.format(port=port))
            proc.signal(signal.SIGHUP)
            await asyncio.get_running_loop().run_in_executor(None, proc.wait_for, "rejected, old script kept")
            await traffic.until("Version B")
            await traffic.finish()
            assert "Version C" not in traffic.reasons
        log = proc.log()
        assert f"{cfg}:8:5" in log and "no_such_function" in log
    finally:
        assert proc.stop() == 0
