"""What every part of Server shares: the attributes Server.__init__ sets and the methods one part calls
in another, declared for the type checker only (at run time this class is empty)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .config import CoreConfig
from .events import EventBus
from .module import ModuleSet
from .stats import CoreCounters, Statistics

if TYPE_CHECKING:
    from routescript.script.context import MsgContext

    from .loading import Loaded
    from .requests import RequestSender


class ServerBase:
    """The state of a Server; the parts (loading, lifecycle, dispatch, replies) are mixins over it."""

    path: str
    config: CoreConfig
    modules: ModuleSet
    registry: Any
    script: Any
    loaded: Loaded | None
    events: EventBus
    statistics: Statistics
    counters: CoreCounters
    transport: Any
    transactions: Any
    requests: RequestSender | None   # set by start(), with the transactions
    sockets: list[Any]
    _databases: dict[str, Any]
    _tasks: set[asyncio.Task[Any]]
    _running: asyncio.Semaphore
    _stopped: asyncio.Event
    _started: bool
    _closing: Any            # lifecycle.CloseStack: what start() opened, closed by stop()
    _reload_lock: asyncio.Lock
    _timer_names: set[str]
    queue_delay_limit: float

    if TYPE_CHECKING:  # what one part calls in another (defined in server.py and the mixins)
        def _spawn(self, coro: Any) -> asyncio.Task[Any]: ...
        def _on_message(self, msg: Any, source: Any) -> None: ...
        def _too_late(self, msg: Any, source: Any, arrived: float) -> bool: ...
        async def reload_routes(self) -> list[Any]: ...
        def _start_timers(self) -> None: ...
        def _has_route(self, kind: str, name: str | None, script: Any = None) -> bool: ...
        async def _run_route(self, kind: str, name: str | None, ctx: MsgContext,
                             script: Any = None) -> int: ...
        def _has_event_route(self, name: str) -> bool: ...
        async def _run_event_route(self, name: str, ctx: MsgContext) -> bool: ...
        def reply(self, ctx: MsgContext, code: int, reason: str | None = None, **kw: Any) -> Any: ...
