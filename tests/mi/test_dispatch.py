"""The MI registry and JSON-RPC framing, without any transport: OpenSIPS's recipe matching, its error
shapes and texts (mi/mi.h, mi/item.c), notifications, batches, typed parameters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from routescript.core.module import MICommand, MIError, Module, mi_command
from routescript.core.config import CoreConfig
from routescript.mi import MIRegistry, build_registry, handle_payload
from routescript.mi.jsonrpc import JSONRPCError


class FakeServer:
    """What the core commands read from a server, and nothing else."""

    def __init__(self) -> None:
        self.config = CoreConfig()
        self.reloads: list[Any] = []
        self.stopped = False

    async def reload_routes(self) -> list[Any]:
        return self.reloads

    async def stop(self) -> None:
        self.stopped = True


class Diag:
    def __init__(self, text: str, severity: str) -> None:
        self.text, self.severity = text, severity

    def __str__(self) -> str:
        return self.text


class PresenceLike(Module):
    name = "presence"

    @mi_command("pres_expose", optional=("filter",))
    def pres_expose(self, event: str, filter: str | None = None) -> str:
        return f"{event}/{filter}"

    @mi_command("subs_phtable_list", optional=("from_", "to"))
    def subs_list(self, from_: str | None = None, to: str | None = None) -> list[Any]:
        return [{"from": from_, "to": to}]

    subs_list._rs_mi_recipes = ((), ("from", "to"))  # type: ignore[attr-defined]

    @mi_command("refreshWatchers", aliases=("refresh_watchers",))
    async def refresh(self, presentity_uri: str, event: str, refresh_type: int) -> None:
        self.last = (presentity_uri, event, refresh_type)

    @mi_command("fail")
    def fail(self) -> None:
        raise MIError("no such presentity", 404)

    @mi_command("crash")
    def crash(self) -> None:
        raise RuntimeError("bug")


class Modules:
    def __init__(self, *mods: Module) -> None:
        self.instances = {m.name: m for m in mods}


@pytest.fixture
def server() -> FakeServer:
    s = FakeServer()
    s.modules = Modules(PresenceLike(s, {}))  # type: ignore[attr-defined]
    return s


@pytest.fixture
def reg(server: FakeServer) -> MIRegistry:
    return build_registry(server, clock=lambda: 1000.0)


async def rpc(reg: MIRegistry, req: Any, **kw: Any) -> Any:
    async def dispatch(name: str, params: Any) -> Any:
        return await reg.dispatch(name, params, **kw)
    text = await handle_payload(req if isinstance(req, str) else json.dumps(req), dispatch)
    return None if text is None else json.loads(text)


def err_of(reply: dict[str, Any]) -> dict[str, Any]:
    assert "result" not in reply, reply
    return reply["error"]


# ---------------------------------------------------------------- framing (capture 09 shapes)
async def test_unknown_method_exact_text(reg: MIRegistry) -> None:
    async def dispatch(name: str, params: Any) -> Any:
        return await reg.dispatch(name, params)
    text = await handle_payload(b'{"jsonrpc": "2.0", "method": "no_such_command", "id": 1}', dispatch)
    assert text == '{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":1}'


async def test_positional_count_mismatch_exact_text(reg: MIRegistry) -> None:
    async def dispatch(name: str, params: Any) -> Any:
        return await reg.dispatch(name, params)
    text = await handle_payload(
        b'{"jsonrpc": "2.0", "method": "subs_phtable_list", "id": 1, "params": ["sip:nobody*"]}', dispatch)
    assert text == ('{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params",'
                    '"data":"Too few or too many parameters"},"id":1}')


async def test_result_member_order_and_string_id(reg: MIRegistry) -> None:
    async def dispatch(name: str, params: Any) -> Any:
        return await reg.dispatch(name, params)
    text = await handle_payload('{"jsonrpc":"2.0","method":"pres_expose","id":"1",'
                                '"params":{"event":"presence"}}', dispatch)
    assert text == '{"jsonrpc":"2.0","result":"presence/None","id":"1"}'


async def test_parse_error_and_invalid_requests(reg: MIRegistry) -> None:
    assert await rpc(reg, "{nope") == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"},
                                       "id": None}
    for bad in ({"method": "which", "id": 1}, {"jsonrpc": "1.0", "method": "which", "id": 1},
                {"jsonrpc": "2.0", "method": 5, "id": 1}, {"jsonrpc": "2.0", "method": "which", "params": "x",
                                                           "id": 1},
                {"jsonrpc": "2.0", "method": "which", "id": [1]}, '"just a string"'):
        reply = await rpc(reg, bad)
        assert err_of(reply) == {"code": -32600, "message": "Invalid Request"}


async def test_notification_gets_no_reply_unless_invalid(reg: MIRegistry) -> None:
    assert await rpc(reg, {"jsonrpc": "2.0", "method": "uptime"}) is None
    assert await rpc(reg, {"jsonrpc": "2.0", "method": "no_such"}) is None  # errors too, as OpenSIPS
    assert err_of(await rpc(reg, {"jsonrpc": "2.0"}))["code"] == -32600
    # "id": null is a request, not a notification
    assert (await rpc(reg, {"jsonrpc": "2.0", "method": "pwd", "id": None}))["id"] is None


async def test_empty_params_count_as_none(reg: MIRegistry) -> None:
    for params in ([], {}):
        reply = await rpc(reg, {"jsonrpc": "2.0", "method": "which", "id": 7, "params": params})
        assert "uptime" in reply["result"]


async def test_batch(reg: MIRegistry) -> None:
    replies = await rpc(reg, [{"jsonrpc": "2.0", "method": "pwd", "id": 1},
                              {"jsonrpc": "2.0", "method": "uptime"},
                              {"jsonrpc": "2.0", "method": "nope", "id": 2}])
    assert [r["id"] for r in replies] == [1, 2]
    assert "WD" in replies[0]["result"] and replies[1]["error"]["code"] == -32601
    assert err_of(await rpc(reg, []))["code"] == -32600


# ---------------------------------------------------------------- recipes
async def test_named_and_positional_binding(reg: MIRegistry) -> None:
    assert await reg.dispatch("pres_expose", ["presence"]) == "presence/None"
    assert await reg.dispatch("pres_expose", ["presence", "sip:a*"]) == "presence/sip:a*"
    assert await reg.dispatch("pres_expose", {"filter": "f", "event": "dialog"}) == "dialog/f"
    assert await reg.dispatch("subs_phtable_list", {"from": "a", "to": "b"}) == [{"from": "a", "to": "b"}]
    assert await reg.dispatch("subs_phtable_list", ["a", "b"]) == [{"from": "a", "to": "b"}]
    assert await reg.dispatch("subs_phtable_list") == [{"from": None, "to": None}]


@pytest.mark.parametrize("name,params,data", [
    ("pres_expose", None, "Too few or too many parameters"),
    ("pres_expose", ["a", "b", "c"], "Too few or too many parameters"),
    ("pres_expose", {"filter": "x"}, "Named parameters do not match"),
    ("pres_expose", {"event": "x", "bogus": 1}, "Named parameters do not match"),
    ("subs_phtable_list", {"from": "a"}, "Too few or too many parameters"),
    ("subs_phtable_list", {"from": "a", "too": "b"}, "Named parameters do not match"),
    ("log_level", {"pid": 1}, "Named parameters do not match"),
    ("uptime", ["x"], "Too few or too many parameters"),
    ("refreshWatchers", ["sip:a@b", "presence", "soon"], "Bad type for parameter 'refresh_type'"),
    ("refreshWatchers", ["sip:a@b", ["presence"], 1], "Bad type for parameter 'event'"),
    ("get_statistics", ["all"], "Bad type for parameter 'statistics'"),
    ("get_statistics", [[]], "Empty array in parameter 'statistics'"),
])
async def test_invalid_params(reg: MIRegistry, name: str, params: Any, data: str) -> None:
    with pytest.raises(JSONRPCError) as info:
        await reg.dispatch(name, params)
    assert (info.value.code, info.value.message, info.value.data) == (-32602, "Invalid params", data)


async def test_typed_values_and_aliases(reg: MIRegistry, server: Any) -> None:
    mod = server.modules.instances["presence"]
    assert await reg.dispatch("refresh_watchers", ["sip:a@b", "presence", "1"]) == "OK"
    assert mod.last == ("sip:a@b", "presence", 1)
    params = {"presentity_uri": "u", "event": 5, "refresh_type": 0}
    assert await reg.dispatch("refreshWatchers", params) == "OK"
    assert mod.last == ("u", "5", 0)


async def test_command_errors(reg: MIRegistry) -> None:
    reply = await rpc(reg, {"jsonrpc": "2.0", "method": "fail", "id": 1})
    assert err_of(reply) == {"code": 404, "message": "no such presentity"}
    reply = await rpc(reg, {"jsonrpc": "2.0", "method": "crash", "id": 1})
    assert err_of(reply)["code"] == -32000 and err_of(reply)["message"] == "Server error"


def test_duplicate_names_are_skipped() -> None:
    reg = MIRegistry()
    assert reg.add(MICommand("x", lambda: 1))
    assert not reg.add(MICommand("x", lambda: 2, module="other"))
    assert not reg.add(MICommand("y", lambda: 2, aliases=("x",)))
    assert reg.names() == ["x"]


async def test_recipes_declared_with_mi_command() -> None:
    """mi_command(recipes=...) gives the exact parameter sets, as the older _rs_mi_recipes tag does."""
    class WithRecipes(Module):
        name = "with_recipes"

        @mi_command("range_list", optional=("from_", "to"), recipes=((), ("from", "to")))
        def range_list(self, from_: str | None = None, to: str | None = None) -> list[Any]:
            return [from_, to]

    reg = MIRegistry()
    reg.add_all(WithRecipes(FakeServer(), {}).mi_commands())  # type: ignore[arg-type]
    assert reg.recipes("range_list") == ((), ("from", "to"))
    assert await reg.dispatch("range_list", ["a", "b"]) == ["a", "b"]
    with pytest.raises(JSONRPCError) as info:
        await reg.dispatch("range_list", ["a"])
    assert info.value.data == "Too few or too many parameters"


# ---------------------------------------------------------------- core commands
async def test_which_lists_everything_and_recipes(reg: MIRegistry) -> None:
    names = await reg.dispatch("which")
    for n in ("uptime", "version", "pwd", "arg", "which", "ps", "kill", "log_level", "xlog_level",
              "get_statistics", "list_statistics", "reset_statistics", "reload_routes", "help",
              "pres_expose", "subs_phtable_list", "refreshWatchers", "refresh_watchers"):
        assert n in names
    assert await reg.dispatch("which", ["log_level"]) == [[], ["level"], ["level", "pid"]]
    assert await reg.dispatch("which", {"command": "subs_phtable_list"}) == [[], ["from", "to"]]
    with pytest.raises(JSONRPCError) as info:
        await reg.dispatch("which", ["nope"])
    assert (info.value.code, info.value.message) == (404, "unknown MI command")


async def test_uptime_version_help(reg: MIRegistry) -> None:
    up = await reg.dispatch("uptime")
    assert set(up) == {"Now", "Up since", "Up time"} and up["Up time"] == "0 [sec]"
    assert (await reg.dispatch("version"))["Server"].startswith("routescript (")
    assert await reg.dispatch("help", ["pres_expose"]) == {"Help": "not available for this command",
                                                          "Exported by": "presence"}
    assert await reg.dispatch("help") == "Usage: help mi_cmd - returns information about 'mi_cmd'"
    assert (await reg.dispatch("help", {"mi_cmd": "uptime"}))["Exported by"] == "core"


async def test_log_levels(reg: MIRegistry) -> None:
    import logging
    import os

    before = logging.getLogger("routescript").level
    try:
        assert await reg.dispatch("log_level", [4]) == {"New global log level": 4}
        assert logging.getLogger("routescript").level == logging.DEBUG
        got = await reg.dispatch("log_level")
        assert got["Processes"][0]["Log level"] == 4 and got["Processes"][0]["PID"] == os.getpid()
        assert await reg.dispatch("log_level", {"level": 1, "pid": os.getpid()}) == {"Log level": 1}
        with pytest.raises(JSONRPCError) as info:
            await reg.dispatch("log_level", [1, os.getpid() + 1])
        assert info.value.data == "Bad PID"
        assert await reg.dispatch("xlog_level", ["2"]) == {"New xLog level": 2}
        assert await reg.dispatch("xlog_level") == {"xLog Level": 2}
    finally:
        logging.getLogger("routescript").setLevel(before)


async def test_reload_routes_reports_diagnostics(reg: MIRegistry, server: FakeServer) -> None:
    assert await reg.dispatch("reload_routes") == "OK"
    server.reloads = [Diag("a.cfg:3:1: warning: change ignored", "warning")]
    assert await reg.dispatch("reload_routes") == {"Status": "OK",
                                                   "Warnings": ["a.cfg:3:1: warning: change ignored"]}
    server.reloads = [Diag("a.cfg:5:5: unknown function 'x'", "error")]
    with pytest.raises(JSONRPCError) as info:
        await reg.dispatch("reload_routes")
    assert (info.value.code, info.value.message, info.value.data) == (
        -32000, "reload failed", ["a.cfg:5:5: unknown function 'x'"])


async def test_kill_needs_the_transport_permission(reg: MIRegistry, server: FakeServer) -> None:
    import asyncio

    with pytest.raises(JSONRPCError) as info:
        await reg.dispatch("kill")
    assert info.value.code == -32000 and "enable_kill" in info.value.message
    assert not server.stopped
    assert await reg.dispatch("kill", allow_kill=True) == "OK"
    for _ in range(5):
        await asyncio.sleep(0)
    assert server.stopped
