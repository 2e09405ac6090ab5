"""What presence needs from the server, and nothing more: one Protocol the core's Server satisfies and
the tests' small fakes satisfy structurally (no attribute is probed with getattr)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from routescript.core.events import EventBus
    from routescript.core.stats import Statistics
    from routescript.db import Database
    from routescript.script.context import MsgContext
    from routescript.script.registry import Registry
    from routescript.sip import SIPMessage, SocketInfo


class RequestSender(Protocol):
    """The transaction layer as NOTIFY sending uses it: a client transaction, its final response
    handed to `on_final`."""

    def send_request(self, req: Any, dest: Any, on_final: Callable[[Any], None], *,
                     branch: str | None = None) -> object: ...


class PresenceServer(Protocol):
    """The server as presence sees it: replies and their To tag, the event bus (None in a test without
    one), the listening sockets, statistics, databases, the script registry (pseudo-variables of
    bla_presentity_spec; None before a script is loaded) and the transaction layer."""

    events: EventBus | None
    sockets: Sequence[SocketInfo]
    statistics: Statistics
    registry: Registry | None
    transactions: RequestSender

    def reply(self, ctx: MsgContext, code: int, reason: str | None = None, *,
              headers: Sequence[tuple[str, str]] = ()) -> object: ...

    def to_tag(self, msg: SIPMessage) -> str: ...

    async def database(self, url: str) -> Database: ...
