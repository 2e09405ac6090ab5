"""The event bus: event_route runs with $param values; subscribers get every event."""

from __future__ import annotations

from typing import Any

from routescript.core.events import EventBus
from routescript.script.context import EVENT_ROUTE, MsgContext


async def test_raise_event_runs_route_then_subscribers() -> None:
    seen: list[tuple[str, Any]] = []

    async def run_route(name: str, ctx: MsgContext) -> bool:
        assert ctx.route_type == EVENT_ROUTE and ctx.msg is None
        seen.append(("route", name, dict(ctx.params)))  # type: ignore[arg-type]
        return True

    bus = EventBus(run_route)
    bus.declare("E_PRESENCE_PUBLISH")
    bus.subscribe(lambda n, p: seen.append(("one", n, p)), "E_PRESENCE_PUBLISH")  # type: ignore[arg-type]

    async def any_sub(n: str, p: dict[str, Any]) -> None:
        seen.append(("any", n, p))  # type: ignore[arg-type]

    bus.subscribe(any_sub)
    await bus.raise_event("E_PRESENCE_PUBLISH", {"presentity": "sip:a@b", "expires": 3600})
    assert seen == [("route", "E_PRESENCE_PUBLISH", {"presentity": "sip:a@b", "expires": 3600}),
                    ("one", "E_PRESENCE_PUBLISH", {"presentity": "sip:a@b", "expires": 3600}),
                    ("any", "E_PRESENCE_PUBLISH", {"presentity": "sip:a@b", "expires": 3600})]


async def test_failing_subscriber_does_not_stop_others_and_nowait_drains() -> None:
    got: list[str] = []

    def bad(n: str, p: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    bus = EventBus(None)
    bus.subscribe(bad)
    bus.subscribe(lambda n, p: got.append(n))  # type: ignore[arg-type]
    bus.raise_event_nowait("E_X", {})
    bus.raise_event_nowait("E_Y", {})
    await bus.drain()
    assert got == ["E_X", "E_Y"]
    bus.unsubscribe(bad)
    await bus.raise_event("E_Z", {})
    assert got[-1] == "E_Z"


async def test_wanted_only_when_a_route_or_subscriber_would_get_it() -> None:
    routes = {"E_ROUTED"}
    ran: list[str] = []

    async def run_route(name: str, ctx: MsgContext) -> bool:
        ran.append(name)
        return True

    bus = EventBus(run_route, has_route=routes.__contains__)
    assert bus.wanted("E_ROUTED") and not bus.wanted("E_QUIET")
    routes.add("E_QUIET")                       # a reload that adds the route: asked each time
    assert bus.wanted("E_QUIET")
    routes.clear()

    def one(n: str, p: dict[str, Any]) -> None:
        ran.append("sub:" + n)

    bus.subscribe(one, "E_QUIET")
    assert bus.wanted("E_QUIET") and not bus.wanted("E_ROUTED")
    bus.unsubscribe(one, "E_QUIET")
    assert not bus.wanted("E_QUIET")
    bus.subscribe(one)                          # every event
    assert bus.wanted("E_ROUTED") and bus.wanted("E_OTHER")
    assert not EventBus(None).wanted("E_ROUTED")   # no route runner, no subscriber


async def test_event_interface_listens_only_to_subscribed_events() -> None:
    from routescript.core.evi import EventInterface

    class Sink:
        proto = "probe"

        def __init__(self) -> None:
            self.got: list[tuple[str, dict[str, Any]]] = []

        async def parse(self, address: str) -> str:
            return address

        def print(self, sock: Any) -> str:
            return str(sock)

        def raise_event(self, name: str, params: dict[str, Any], sock: Any) -> None:
            self.got.append((name, params))

    bus = EventBus(None)
    bus.declare("E_A")
    bus.declare("E_B")
    clock = [1000.0]
    evi = EventInterface(bus, clock=lambda: clock[0])
    sink = Sink()
    evi.register_transport(sink)  # type: ignore[arg-type]
    assert not bus.wanted("E_A") and not bus.wanted("E_B")
    await evi.subscribe("E_A", "probe:x", 10)
    assert bus.wanted("E_A") and not bus.wanted("E_B")
    await bus.raise_event("E_A", {"k": 1})
    await bus.raise_event("E_B", {"k": 2})
    assert sink.got == [("E_A", {"k": 1})]
    await evi.subscribe("E_A", "probe:x", 0)    # unsubscribed
    assert not bus.wanted("E_A")
    await evi.subscribe("E_B", "probe:y", 10)
    clock[0] += 11                              # expired: no longer listened to once pruned
    evi.subscribers()
    assert not bus.wanted("E_B")


def _bus_on(script_text: str, seen: list[Any]) -> tuple[EventBus, Any]:
    """An EventBus fed by the real Routes holding `script_text` compiled with note()/anote()."""
    import asyncio

    from routescript.core.routes import Routes
    from routescript.script import compile_script, parse_text
    from routescript.script.registry import ArgSpec, PVarSpec, Registry, function

    def note(ctx: MsgContext, text: str) -> int:
        seen.append((text, ctx.params.get("who")))
        return 1

    async def anote(ctx: MsgContext, text: str) -> int:
        await asyncio.sleep(0)
        seen.append((text, ctx.params.get("who")))
        return 1

    reg = Registry()
    reg.add_function(function("note", note, ArgSpec("str")))
    reg.add_function(function("anote", anote, ArgSpec("str")))
    reg.add_pvar(PVarSpec("param", lambda c, k, i: c.params.get(k), key="required"))
    routes = Routes()

    def load(text: str) -> None:
        routes.script = compile_script(parse_text(text, "e.cfg"), reg)

    load(script_text)
    bus = EventBus(routes.run_event, None, routes.has_event, routes.run_event_now)
    return bus, load


async def test_never_waiting_event_route_runs_in_place_without_a_task() -> None:
    """event_route[E] with no async function (nor in the routes it calls) runs when raised, no task;
    one that may wait, one declared async, or an event with a subscriber still gets a task."""
    seen: list[Any] = []
    bus, _ = _bus_on('route { exit; } route[r] { note("via route $param(who)"); }\n'
                     'event_route[E_SYNC] { note("sync $param(who)"); route(r); }\n'
                     'route[w] { anote("waits"); }\n'
                     'event_route[E_WAITS] { route(w); }\n'
                     'event_route[E_DECLARED, async] { note("declared async"); }', seen)
    bus.raise_event_nowait("E_SYNC", {"who": "alice"})
    assert seen == [("sync alice", "alice"), ("via route alice", "alice")] and not bus._tasks
    bus.raise_event_nowait("E_WAITS", {"who": "bob"})
    bus.raise_event_nowait("E_DECLARED", {"who": "carol"})
    assert len(bus._tasks) == 2 and len(seen) == 2
    await bus.drain()
    assert seen[2:] == [("declared async", "carol"), ("waits", "bob")]
    got: list[str] = []
    bus.subscribe(lambda n, p: got.append(p["who"]), "E_SYNC")  # type: ignore[arg-type,func-returns-value]
    bus.raise_event_nowait("E_SYNC", {"who": "dave"})
    assert len(bus._tasks) == 1 and got == []
    await bus.drain()
    assert got == ["dave"] and seen[-1] == ("via route dave", "dave")


async def test_event_routes_follow_the_script_across_reload() -> None:
    """The event routes come from the script in place: a reload that drops E_SYNC or makes it wait
    is seen by the next raise."""
    seen: list[Any] = []
    bus, load = _bus_on('route { exit; } event_route[E_SYNC] { note("first"); }', seen)
    bus.raise_event_nowait("E_SYNC", {})
    load('route { exit; }')
    assert not bus.wanted("E_SYNC")
    bus.raise_event_nowait("E_SYNC", {})   # nobody: a task that finds no route
    await bus.drain()
    load('route { exit; } event_route[E_SYNC] { anote("second"); }')
    assert bus.wanted("E_SYNC")
    bus.raise_event_nowait("E_SYNC", {})
    assert len(bus._tasks) == 1
    await bus.drain()
    assert [text for text, _ in seen] == ["first", "second"]
