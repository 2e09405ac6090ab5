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
