"""MI against a real running Server: every core command over mi_http and over mi_fifo, the raw HTTP
exchange of capture 09/23 field for field, the FIFO exchange of capture 24, the `opensips` PyPI
package's client on both transports, and `routescript mi` (routescript.mi.cli)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from routescript.core.module import MICommand
from routescript.core.server import Server
from routescript.mi.cli import main as mi_main
from routescript.mi.client import MIReplyError, call_fifo, call_http
from routescript.mi.registry import mi_registry

CFG = """
log_level = 2
socket = udp:127.0.0.1:0
socket = tcp:127.0.0.1:0
loadmodule "sl.so"
loadmodule "httpd.so"
loadmodule "mi_http.so"
loadmodule "mi_fifo.so"
modparam("httpd", "ip", "127.0.0.1")
modparam("httpd", "port", 0)
modparam("mi_http", "root", "mi")
modparam("mi_http", "enable_kill", {kill})
modparam("mi_fifo", "fifo_name", "{fifo}")
modparam("mi_fifo", "fifo_mode", 0600)
modparam("mi_fifo", "reply_dir", "{dir}/")
route {{
    sl_send_reply(200, "{reason}");
}}
"""

TIMEOUT = 10.0


class Running:
    def __init__(self, server: Server, cfg: Path, fifo: str, reply_dir: str) -> None:
        self.server = server
        self.cfg = cfg
        self.fifo = fifo
        self.reply_dir = reply_dir
        self.url = server.modules.get("httpd").url + "/mi"  # type: ignore[union-attr]

    async def http(self, method: str, params: Any = None) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(call_http, self.url, method, params, timeout=TIMEOUT),
                                      TIMEOUT)

    async def fifo_call(self, method: str, params: Any = None) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(call_fifo, self.fifo, method, params,
                                                        reply_dir=self.reply_dir, timeout=TIMEOUT), TIMEOUT)

    async def call(self, transport: str, method: str, params: Any = None) -> Any:
        return await (self.http(method, params) if transport == "http" else self.fifo_call(method, params))


async def start(tmp_path: Path, kill: int = 0) -> Running:
    fifo = str(tmp_path / "rs_fifo")
    cfg = tmp_path / "mi.cfg"
    cfg.write_text(CFG.format(fifo=fifo, dir=tmp_path, kill=kill, reason="A"))
    server = Server()
    server.load(str(cfg))
    await server.start()
    return Running(server, cfg, fifo, str(tmp_path))


@pytest.fixture
async def running(tmp_path: Path) -> Any:
    r = await start(tmp_path)
    try:
        yield r
    finally:
        await r.server.stop()
    assert not os.path.exists(r.fifo)  # noqa: ASYNC240 - the FIFO is removed at stop


TRANSPORTS = ["http", "fifo"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_core_commands(running: Running, transport: str) -> None:
    names = await running.call(transport, "which")
    assert names[:3] == ["uptime", "version", "pwd"] and "httpd_list_root_path" in names
    assert await running.call(transport, "which", ["reset_statistics"]) == [["statistics"]]
    up = await running.call(transport, "uptime")
    assert up["Up time"].endswith(" [sec]")
    assert (await running.call(transport, "version"))["Server"].startswith("routescript (")
    assert await running.call(transport, "pwd") == {"WD": os.getcwd()}
    assert isinstance(await running.call(transport, "arg"), list)
    assert (await running.call(transport, "ps"))["Processes"][0]["PID"] == os.getpid()
    assert (await running.call(transport, "help", ["uptime"]))["Exported by"] == "core"
    assert await running.call(transport, "log_level", {"level": 2}) == {"New global log level": 2}
    assert (await running.call(transport, "log_level"))["Processes"][0]["Log level"] == 2
    assert await running.call(transport, "xlog_level", [2]) == {"New xLog level": 2}
    assert await running.call(transport, "reload_routes") == "OK"
    assert await running.call(transport, "list_tcp_conns") == {"Connections": []}
    assert "Events" in await running.call(transport, "events_list")
    assert await running.call(transport, "httpd_list_root_path") == {
        "Roots": [{"http_root": "mi", "module": "mi_http"}]}
    running.server.counters.rcv_requests = 3  # the core's counter, as the message path updates it
    assert mi_registry(running.server).statistics is running.server.statistics
    assert await running.call(transport, "get_statistics", [["rcv_requests"]]) == {"core:rcv_requests": 3}
    core = await running.call(transport, "get_statistics", [["core:"]])
    assert core["core:rcv_requests"] == 3 and core["core:unsupported_methods"] == 0
    listed = await running.call(transport, "list_statistics")
    assert listed["core:rcv_requests"] == "incremental" and listed["core:timestamp"] == "non-incremental"
    assert listed["sl:1xx_replies"] == "incremental" and "tm:UAS_transactions" not in listed  # no tm loaded
    assert await running.call(transport, "reset_statistics", {"statistics": ["rcv_requests"]}) == "OK"
    assert running.server.counters.rcv_requests == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_errors(running: Running, transport: str) -> None:
    cases = [("no_such_command", None, -32601, "Method not found", None),
             ("uptime", ["x"], -32602, "Invalid params", "Too few or too many parameters"),
             ("log_level", [1, 2, 3], -32602, "Invalid params", "Too few or too many parameters"),
             ("log_level", {"lvl": 1}, -32602, "Invalid params", "Named parameters do not match"),
             ("log_level", ["loud"], -32602, "Invalid params", "Bad type for parameter 'level'"),
             ("get_statistics", [["nothing"]], 404, "Statistics Not Found", None),
             ("kill", None, -32000, None, None)]
    for method, params, code, message, data in cases:
        with pytest.raises(MIReplyError) as info:
            await running.call(transport, method, params)
        assert info.value.code == code
        if message is not None:
            assert info.value.message == message
        assert info.value.data == data
    assert running.server.started  # kill was refused: enable_kill is 0


async def test_reload_routes_failure_keeps_old_script(running: Running) -> None:
    running.cfg.write_text(running.cfg.read_text().replace('sl_send_reply(200, "A");', "no_such_function();"))
    for transport in TRANSPORTS:
        with pytest.raises(MIReplyError) as info:
            await running.call(transport, "reload_routes")
        assert info.value.code == -32000 and info.value.message == "reload failed"
        assert any("no_such_function" in d for d in info.value.data)


async def test_raw_http_exchange_as_capture_09(running: Running) -> None:
    """Field for field what OpenSIPS 3.4 sent (09-mi-http.txt): HTTP 200, compact JSON, same members."""
    async def subs_list(**kw: Any) -> list[Any]:
        return []
    subs_list._rs_mi_recipes = ((), ("from", "to"))  # type: ignore[attr-defined]
    mi_registry(running.server).add(MICommand("subs_phtable_list", subs_list, ("from", "to"),
                                              ("from", "to"), module="presence"))
    exchanges = [
        ('{"jsonrpc": "2.0", "method": "subs_phtable_list", "id": 1, "params": ["sip:nobody*"]}',
         ('{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params",'
          '"data":"Too few or too many parameters"},"id":1}')),
        (('{"jsonrpc": "2.0", "method": "subs_phtable_list", "id": 1, "params": {"from": "sip:dave*", '
          '"to": "sip:carol*"}}'), '{"jsonrpc":"2.0","result":[],"id":1}'),
        ('{"jsonrpc": "2.0", "method": "no_such_command", "id": 1}',
         '{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":1}'),
    ]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
        for request, expected in exchanges:
            headers = {"Content-Type": "application/json"}
            async with http.post(running.url, data=request, headers=headers) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "application/json"
                assert await r.text() == expected
        async with http.post(running.url, data='{"jsonrpc": "2.0", "method": "uptime"}') as r:
            assert r.status == 202 and await r.read() == b""  # a notification: no reply
        async with http.get(running.url) as r:
            assert r.status == 405
        async with http.post(running.url, data=b"") as r:
            assert r.status == 400
        async with http.post(running.url.replace("/mi", "/other"), data="{}") as r:
            assert r.status == 404
        async with http.post(running.url, data="[{\"jsonrpc\":\"2.0\",\"method\":\"pwd\",\"id\":1}]") as r:
            assert json.loads(await r.text())[0]["result"] == {"WD": os.getcwd()}


async def test_raw_fifo_exchange_as_capture_24(running: Running) -> None:
    """`:<reply>:<json>` written to the FIFO, the reply read from <reply_dir>/<reply> (24-mi-fifo.txt)."""
    reply_path = os.path.join(running.reply_dir, "anchor_reply_3059_which")
    os.mkfifo(reply_path, 0o600)

    def exchange() -> str:
        rfd = os.open(reply_path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with open(running.fifo, "w", encoding="utf-8") as f:
                f.write(':anchor_reply_3059_which:{"jsonrpc":"2.0","method":"version","id":"1"}')
            # Until the server opens its end, a read sees "no writer" (EOF): wait for the first bytes.
            chunks: list[bytes] = []
            deadline = time.monotonic() + TIMEOUT
            while True:
                try:
                    chunk = os.read(rfd, 65536)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    chunks.append(chunk)
                elif chunks and chunk == b"":
                    return b"".join(chunks).decode()
                elif time.monotonic() > deadline:
                    raise TimeoutError("no reply on the reply FIFO")
                else:
                    time.sleep(0.01)
        finally:
            os.close(rfd)
    text = await asyncio.wait_for(asyncio.to_thread(exchange), TIMEOUT)
    reply = json.loads(text)
    assert text.startswith('{"jsonrpc":"2.0","result":{"Server":') and text.endswith(',"id":"1"}\n')
    assert reply["id"] == "1"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_opensips_package_client(running: Running, transport: str) -> None:
    import opensips.mi as opensips_mi  # the `opensips` package is a test dependency: never skipped
    if transport == "http":
        mi = opensips_mi.OpenSIPSMI("http", url=running.url)
    else:
        mi = opensips_mi.OpenSIPSMI("fifo", fifo_file=running.fifo, fifo_reply_dir=running.reply_dir)

    async def run(cmd: str, params: Any = None) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(mi.execute, cmd, params), TIMEOUT)

    assert "uptime" in await run("which")
    assert dict(await run("log_level", {"level": 3})) == {"New global log level": 3}
    assert dict(await run("log_level", [2])) == {"New global log level": 2}
    with pytest.raises(opensips_mi.OpenSIPSMIException, match="-32601: Method not found"):
        await run("no_such_command")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cli(running: Running, transport: str) -> None:
    where = ["--url", running.url] if transport == "http" else ["--fifo", running.fifo,
                                                              "--reply-dir", running.reply_dir]

    async def cli(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()

        def run() -> int:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                return mi_main(["mi", *where, *args])
        rc = await asyncio.wait_for(asyncio.to_thread(run), TIMEOUT)
        return rc, out.getvalue(), err.getvalue()

    rc, out, _ = await cli("which")
    assert rc == 0 and "uptime" in json.loads(out)
    rc, out, _ = await cli("--yaml", "log_level", "level=2")
    assert rc == 0 and out.strip() == "New global log level: 2"
    rc, out, _ = await cli("log_level", "2")
    assert rc == 0 and json.loads(out) == {"New global log level": 2}
    mi_registry(running.server).statistics.register("core", "x").inc()
    rc, out, _ = await cli("get_statistics", "x", "sl:")
    assert rc == 0 and json.loads(out)["core:x"] == 1 and "sl:sent_replies" in json.loads(out)
    rc, out, err = await cli("no_such_command")
    assert rc == 1 and out == "" and "-32601: Method not found" in err


async def test_cli_url_from_config(running: Running) -> None:
    """--config reads httpd's ip/port and mi_http's root (port 0 here, so only the URL is checked)."""
    from routescript.mi.client import http_url_from_config

    url = await asyncio.to_thread(http_url_from_config, str(running.cfg))
    assert url == "http://127.0.0.1:0/mi"


async def test_cli_cannot_reach(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = mi_main(["mi", "--fifo", str(tmp_path / "none"), "--reply-dir", str(tmp_path), "which"])
    assert rc == 1 and "cannot write to" in err.getvalue()


async def test_kill_when_enabled(tmp_path: Path) -> None:
    r = await start(tmp_path, kill=1)
    try:
        assert await r.http("kill") == "OK"
        for _ in range(200):
            if not r.server.started:
                break
            await asyncio.sleep(0.01)
        assert not r.server.started
    finally:
        await r.server.stop()
    assert not os.path.exists(r.fifo)  # noqa: ASYNC240 - one stat after the server stopped

async def test_no_listener_without_the_modules(tmp_path: Path) -> None:
    cfg = tmp_path / "plain.cfg"
    cfg.write_text('socket = udp:127.0.0.1:0\nloadmodule "sl.so"\nroute { exit; }\n')
    server = Server()
    server.load(str(cfg))
    await server.start()
    try:
        assert getattr(server, "mi", None) is None and server.modules.get("httpd") is None
    finally:
        await server.stop()


async def test_a_stop_while_another_is_under_way_waits_for_its_end(tmp_path: Path) -> None:
    """MI `kill` stops the server in a task; the caller's own stop() meanwhile (`routescript run`'s
    signal handler, a test's teardown) returns only once that stop has closed everything - before, it
    returned at once, the FIFO still there (test_kill_when_enabled failed so under load)."""
    r = await start(tmp_path)
    first = asyncio.ensure_future(r.server.stop())
    for _ in range(5):                         # a few loop turns: the first stop begins
        await asyncio.sleep(0)
    assert not r.server.started
    assert await r.server.stop() is True
    assert not os.path.exists(r.fifo)  # noqa: ASYNC240 - closed by the time the second stop returns
    assert await first is True
