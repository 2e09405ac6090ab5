"""The Server in-process, on loopback sockets: routes of every kind, error paths, module life cycle."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

import routescript.core.loader as loader
from routescript.core.module import Arg, Module, Param, script_function
from routescript.core.server import LoadError, Server
from routescript.sip import parse_message
from routescript.testing import SipTestClient
from routescript.transport.address import Source

pytestmark = pytest.mark.asyncio


class ProbeModule(Module):
    name = "probe"
    params = (Param("tag", str, "p"),)
    events = ("E_PROBE",)
    log: ClassVar[list[str]] = []

    async def start(self) -> None:
        ProbeModule.log.append("start")

    async def stop(self) -> None:
        ProbeModule.log.append("stop")

    @script_function("boom")
    def boom(self, ctx: Any) -> int:
        raise RuntimeError("module bug")

    @script_function("bad_header")
    def bad_header(self, ctx: Any) -> int:
        from routescript.sip import ParseError
        raise ParseError("Bad Event header", 489)

    @script_function("probe_event", Arg("str", "who"))
    async def probe_event(self, ctx: Any, who: str) -> int:
        await self.server.events.raise_event("E_PROBE", {"who": who})
        return 1

    @script_function("note", Arg("str", "text"))
    def note(self, ctx: Any, text: str) -> int:
        ProbeModule.log.append(text)
        return 1


@pytest.fixture(autouse=True)
def probe_module(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loader.find_module_class
    monkeypatch.setattr(loader, "find_module_class", lambda n: ProbeModule if n == "probe" else real(n))
    ProbeModule.log = []


HEAD = """
socket = udp:127.0.0.1:0
socket = tcp:127.0.0.1:0
server_header = "Server: probe"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "probe.so"
"""


async def running(tmp_path: Path, body: str) -> Server:
    cfg = tmp_path / "s.cfg"
    cfg.write_text(HEAD + body)
    server = Server()
    server.load(str(cfg))
    await server.start()
    return server


async def wait_for(cond: Any, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_startup_event_timer_routes_and_module_life_cycle(tmp_path: Path) -> None:
    server = await running(tmp_path, """
startup_route { note("startup"); }
timer_route[tick, 1] { note("tick"); }
event_route[E_PROBE] { note("event $param(who)"); }
route {
    probe_event("$rm");
    sl_send_reply(200, "OK");
}
""")
    try:
        assert ProbeModule.log[:2] == ["start", "startup"]
        assert server.queue_delay_limit == 0.25       # the default: 250 ms
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            resp = await client.send_request(client.options())
            assert resp.status == 200 and resp.header("Server") == "probe"
        assert "event OPTIONS" in ProbeModule.log
        seen: list[Any] = []
        server.events.subscribe(lambda n, p: seen.append((n, p)))
        await server.events.raise_event("E_PROBE", {"who": "mi"})
        assert seen == [("E_PROBE", {"who": "mi"})] and "event mi" in ProbeModule.log
        assert server.timers.routes() == [("tick", 1.0)]
    finally:
        await server.stop()
    assert ProbeModule.log[-1] == "stop"


async def test_timer_route_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await running(tmp_path, 'timer_route[t, 1] { note("tick"); }\nroute { exit; }\n')
    try:
        assert server.timers.routes() == [("t", 1.0)]
        await wait_for(lambda: "tick" in ProbeModule.log, timeout=3)
    finally:
        await server.stop()


async def test_module_bug_gives_500_with_position(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = await running(tmp_path, 'route {\n    boom();\n}\n')
    try:
        port = server.sockets[1].port
        async with await SipTestClient.start("tcp", ("127.0.0.1", port), timeout=3) as client:
            with caplog.at_level(logging.ERROR):
                resp = await client.send_request(client.options())
        assert (resp.status, resp.reason) == (500, "Server Internal Error")
        assert "s.cfg:10:5" in caplog.text and "module bug" in caplog.text
    finally:
        await server.stop()


async def test_error_route_handles_bad_header(tmp_path: Path) -> None:
    server = await running(tmp_path, """
error_route { sl_send_reply(400, "From error_route"); }
route {
    if ($ct == "x") { exit; }
    sl_send_reply(200, "OK");
}
""")
    try:
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            req = client.request("REGISTER", headers=[("Contact", "<sip:broken")])
            resp = await client.send_request(req)
            assert (resp.status, resp.reason) == (400, "From error_route")
            resp = await client.send_request(client.request("REGISTER"))
            assert resp.status == 200
    finally:
        await server.stop()


async def test_unmatched_response_runs_onreply_route(tmp_path: Path) -> None:
    server = await running(tmp_path, 'onreply_route { note("reply $rs"); }\nroute { exit; }\n')
    try:
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            req = client.options()
            from routescript.sip import build_reply
            client.send(build_reply(req, 486, "Busy Here"))
            await wait_for(lambda: "reply 486" in ProbeModule.log)
    finally:
        await server.stop()


async def test_ack_never_answered_and_drop(tmp_path: Path) -> None:
    server = await running(tmp_path, 'route { if (is_method("ACK|BYE")) { drop; } boom(); }\n')
    try:
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            bye = client.request("BYE")
            ack = client.request("ACK")
            client.send(bye)
            client.send(ack)
            await asyncio.sleep(0.2)
            assert client.responses_for(bye) == [] and client.responses_for(ack) == []
            resp = await client.send_request(client.options())   # boom(): 500, the server lives on
            assert resp.status == 500
    finally:
        await server.stop()


async def test_load_errors_are_collected_with_positions(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.cfg"
    cfg.write_text('loadmodule "sl.so"\nmodparam("sl", "nope", 1)\nroute { exit; }\n')
    with pytest.raises(LoadError) as ei:
        Server().load(str(cfg))
    d = ei.value.diagnostics[0]
    assert str(d).startswith(f"{cfg}:2:1: modparam: parameter 'nope' not found in module sl")
    assert 'modparam("sl", "nope", 1)' in str(d)


async def test_is_myself_uses_real_sockets_and_listen_failure(tmp_path: Path) -> None:
    server = await running(tmp_path, 'alias = "pres.example.com"\nroute { exit; }\n')
    try:
        port = server.sockets[0].port
        assert server.is_myself("127.0.0.1", port)
        assert not server.is_myself("10.1.2.3", port)
        assert not server.is_myself("pres.example.org", 5060)
        assert server.is_myself("pres.example.com", 5060)
        # a second server on the same TCP port cannot start: a LoadError naming the socket
        cfg = tmp_path / "clash.cfg"
        cfg.write_text(f"socket = tcp:127.0.0.1:{server.sockets[1].port}\nroute {{ exit; }}\n")
        other = Server()
        other.load(str(cfg))
        with pytest.raises(LoadError, match=r"cannot listen on tcp:127\.0\.0\.1"):
            await other.start()
    finally:
        await server.stop()


class FailingStart(Module):
    name = "failing"

    async def start(self) -> None:
        raise OSError("database unreachable")


async def test_module_start_failure_is_a_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loader.find_module_class
    fakes = {"failing": FailingStart, "probe": ProbeModule}
    monkeypatch.setattr(loader, "find_module_class", lambda n: fakes[n] if n in fakes else real(n))
    cfg = tmp_path / "f.cfg"
    cfg.write_text('socket = udp:127.0.0.1:0\nloadmodule "probe.so"\nloadmodule "failing.so"\n'
                   'route { exit; }\n')
    server = Server()
    server.load(str(cfg))
    with pytest.raises(LoadError) as ei:
        await server.start()
    assert str(ei.value).startswith(f"{cfg}:3:1: module 'failing' failed to start: "
                                    "OSError: database unreachable")
    assert ProbeModule.log == ["start", "stop"]   # what had started was stopped again


async def test_overload_gives_503_and_server_signature(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server = await running(tmp_path, 'server_signature = no\nroute { sl_send_reply(200, "OK"); }\n')
    try:
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            resp = await client.send_request(client.options())
            assert resp.status == 200 and resp.header("Server") is None   # server_signature = no
            monkeypatch.setattr(server.dispatcher, "max_pending", 0)
            resp = await client.send_request(client.options())
            assert (resp.status, resp.header("Retry-After")) == (503, "5")
    finally:
        await server.stop()


async def test_peer_error_from_a_function_becomes_its_reply_or_sl_reply_error(tmp_path: Path) -> None:
    server = await running(tmp_path, """
route {
    if ($rm == "OPTIONS") {
        bad_header();
        exit;
    }
    if (!bad_header()) sl_reply_error();
}
""")
    try:
        # nothing is wrapped: the registry holds the module's own bound methods
        assert server.registry.functions["bad_header"].impl.__func__ is ProbeModule.bad_header
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            resp = await client.send_request(client.options())
            assert (resp.status, resp.reason) == (489, "Bad Event header")  # the core answered it
            resp = await client.send_request(client.request("SUBSCRIBE"))
            assert (resp.status, resp.reason) == (489, "Bad Event header")  # sl_reply_error() did
    finally:
        await server.stop()


async def test_reload_starts_new_timer_routes_and_stops_removed_ones(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    server = await running(tmp_path, 'timer_route[a, 1] { note("a"); }\nroute { exit; }\n')
    try:
        real = server.timers.routes
        monkeypatch.setattr(server.timers, "routes", lambda: [(n, 0.01) for n, _i in real()])
        await wait_for(lambda: "a" in ProbeModule.log)
        cfg = tmp_path / "s.cfg"
        cfg.write_text(HEAD + 'timer_route[b, 2] { note("b"); }\nroute { exit; }\n')
        assert await server.reload_routes() == []
        assert real() == [("b", 2.0)]
        await wait_for(lambda: "b" in ProbeModule.log)
        await wait_for(lambda: server.timers.names == {"b"})
        ProbeModule.log.clear()
        await wait_for(lambda: ProbeModule.log.count("b") >= 3)
        assert "a" not in ProbeModule.log
    finally:
        await server.stop()
    assert server.timers.names == set()


# queue_delay_limit 100 ms; the script notes each request it runs, then answers it.
NOTE_AND_ANSWER_100MS = """
queue_delay_limit = 100
route {
    note("$rm $ci");
    sl_send_reply(200, "OK");
}
"""


async def test_requests_that_waited_past_queue_delay_limit_get_503_not_the_script(tmp_path: Path) -> None:
    """Overload: a request whose turn comes more than queue_delay_limit ms after it arrived is
    answered 503 + Retry-After without running the script; one on time runs as usual. The requests
    are handed to the server as its transport does, with the time they arrived; the answers go to the
    client over UDP."""
    server = await running(tmp_path, NOTE_AND_ANSWER_100MS)
    try:
        assert server.queue_delay_limit == 0.1
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            source = Source("udp", server.sockets[0], "127.0.0.1", client.local_port)
            late, on_time, ack = client.options(), client.options(), client.request("ACK")
            await server.handle_message(parse_message(late.to_bytes()), source, time.monotonic() - 0.3)
            answer = await client.expect_response(late, final=True)
            assert (answer.status, answer.header("Retry-After")) == (503, "5")
            assert f"OPTIONS {late.call_id}" not in ProbeModule.log     # the script never saw it
            assert server.counters.drop_requests == 1
            assert server.statistics.get("core:queue_delay_refusals").value == 1   # docs/operations.md
            await server.handle_message(parse_message(on_time.to_bytes()), source, time.monotonic() - 0.05)
            assert (await client.expect_response(on_time, final=True)).status == 200
            await server.handle_message(parse_message(ack.to_bytes()), source, time.monotonic() - 0.3)
            assert f"ACK {ack.call_id}" in ProbeModule.log             # an ACK is never refused
            assert server.counters.drop_requests == 1
            assert server.statistics.get("core:queue_delay_refusals").value == 1
    finally:
        await server.stop()


async def test_queue_delay_limit_zero_never_sheds(tmp_path: Path) -> None:
    server = await running(tmp_path, "queue_delay_limit = 0\nroute { sl_send_reply(200, \"OK\"); }\n")
    try:
        assert server.queue_delay_limit == 0
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            source = Source("udp", server.sockets[0], "127.0.0.1", client.local_port)
            request = client.options()
            await server.handle_message(parse_message(request.to_bytes()), source, time.monotonic() - 5)
            assert (await client.expect_response(request, final=True)).status == 200
    finally:
        await server.stop()


async def test_requests_that_waited_in_the_kernel_buffer_count_toward_queue_delay_limit(
        tmp_path: Path) -> None:
    """A busy loop reads its UDP socket late: the requests wait in the kernel's receive buffer, where
    no timestamp of ours sees them. The transport's probe datagram, sent to our own socket, times that
    wait; a request read after it is shed like one that waited in the loop's queue. The loop is
    blocked here (as a busy one is) while the probe and a real OPTIONS sit in the buffer."""
    server = await running(tmp_path, NOTE_AND_ANSWER_100MS)
    try:
        endpoint = next(iter(server.transport._udp.values()))
        probe = endpoint.probe
        assert probe is not None                   # started with queue_delay_limit
        port = server.sockets[0].port
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:

            async def blocked_then_answered(with_probe: bool) -> Any:
                endpoint.probe = probe if with_probe else None
                probe.send()
                request = client.options()
                client.send(request)
                time.sleep(0.3)  # noqa: ASYNC251 - the loop is busy; both datagrams wait in the kernel
                return request, await client.expect_response(request, final=True)

            request, answer = await blocked_then_answered(with_probe=True)
            assert (answer.status, answer.header("Retry-After")) == (503, "5")
            assert f"OPTIONS {request.call_id}" not in ProbeModule.log   # the script never saw it
            assert server.counters.drop_requests == 1
            # without the probe the same wait goes unseen: answered as if it were on time
            request, answer = await blocked_then_answered(with_probe=False)
            assert answer.status == 200
            # the buffer drained: the next probe comes back at once, requests run again
            endpoint.probe = probe
            probe.send()
            await wait_for(lambda: probe.last_delay < 0.05)
            on_time = client.options()
            assert (await client.send_request(on_time)).status == 200
            assert server.counters.drop_requests == 1
    finally:
        await server.stop()
    assert endpoint.probe is None                  # closed with the transport


async def test_requests_inside_a_dialog_may_wait_longer_before_they_are_refused(tmp_path: Path) -> None:
    """New work is refused first: a request with a To tag gets IN_DIALOG_ALLOWANCE times the limit."""
    from routescript.core.server import IN_DIALOG_ALLOWANCE

    server = await running(tmp_path, 'queue_delay_limit = 100\nroute { sl_send_reply(200, "OK"); }\n')
    try:
        port = server.sockets[0].port
        between = 0.1 * (1 + IN_DIALOG_ALLOWANCE) / 2     # past the limit, within the allowance
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            source = Source("udp", server.sockets[0], "127.0.0.1", client.local_port)

            async def answer(request: Any, waited: float) -> int:
                msg = parse_message(request.to_bytes())
                await server.handle_message(msg, source, time.monotonic() - waited)
                return (await client.expect_response(request, final=True)).status

            in_dialog = client.request("SUBSCRIBE", headers=[("Event", "presence")])
            in_dialog.set_header("To", in_dialog.header("To") + ";tag=abc")
            assert await answer(in_dialog, between) == 200
            assert await answer(client.request("SUBSCRIBE", headers=[("Event", "presence")]), between) == 503
            late = client.request("SUBSCRIBE", headers=[("Event", "presence")])
            late.set_header("To", late.header("To") + ";tag=abc")
            assert await answer(late, 0.1 * IN_DIALOG_ALLOWANCE + 0.05) == 503
            assert server.counters.drop_requests == 2
    finally:
        await server.stop()


class SlowStop(Module):
    """A module whose stop() waits until the test lets it go: the window of a stopping server."""

    name = "slowstop"
    release: ClassVar[asyncio.Event | None] = None
    stopping: ClassVar[asyncio.Event | None] = None

    async def stop(self) -> None:
        assert SlowStop.stopping is not None and SlowStop.release is not None
        SlowStop.stopping.set()
        await SlowStop.release.wait()


async def test_requests_while_stopping_get_503_and_are_counted(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A request read after stop() began (the modules still stopping) is answered 503 + Retry-After
    and counted in drop_requests; before, it was dropped without a reply or a counter."""
    real = loader.find_module_class
    monkeypatch.setattr(loader, "find_module_class", lambda n: SlowStop if n == "slowstop" else real(n))
    SlowStop.release, SlowStop.stopping = asyncio.Event(), asyncio.Event()
    server = await running(tmp_path, 'loadmodule "slowstop.so"\nroute { sl_send_reply(200, "OK"); }\n')
    port = server.sockets[0].port
    stopping = asyncio.ensure_future(server.stop())
    try:
        await asyncio.wait_for(SlowStop.stopping.wait(), 3)
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=3) as client:
            resp = await client.send_request(client.options())
        assert resp.status == 503 and resp.header("Retry-After") == "5", resp.to_bytes()
        assert server.counters.drop_requests == 1
    finally:
        SlowStop.release.set()
        await asyncio.wait_for(stopping, 5)
