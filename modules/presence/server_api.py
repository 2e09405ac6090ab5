"""What presence needs from the server, and nothing more: one Protocol the core's Server satisfies and
the tests' small fakes satisfy structurally (no attribute is probed with getattr)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from routescript.core.events import EventBus
    from routescript.core.stats import Statistics
    from routescript.db import Database
    from routescript.script.context import MsgContext
    from routescript.script.registry import Registry
    from routescript.core.requests import Hop, OutgoingRequest
    from routescript.sip import SIPRequest, SIPResponse, SipURI, SocketInfo, Source


class DialogRequests(Protocol):
    """The core's request sender (routescript.core.requests.RequestSender) as NOTIFY sending uses it:
    where a request inside the subscription's dialog goes (its Hop, kept for the dialog's next ones),
    the request sent by it, its final response handed to `on_final`."""

    def hop_in_dialog(self, request: OutgoingRequest, *, source: Source | None = None,
                      socket: str = "", ruri: SipURI | None = None) -> Hop: ...

    def send_by(self, request: OutgoingRequest, hop: Hop,
                on_final: Callable[[SIPResponse], None]) -> None: ...


class PresenceServer(Protocol):
    """The server as presence sees it: replies and their To tag, the event bus (None in a test without
    one), the listening sockets, statistics, databases, the script registry (pseudo-variables of
    bla_presentity_spec; None before a script is loaded) and the request sender (None before start)."""

    @property
    def events(self) -> EventBus | None: ...

    @property
    def sockets(self) -> Sequence[SocketInfo]: ...

    @property
    def statistics(self) -> Statistics: ...

    @property
    def registry(self) -> Registry | None: ...

    @property
    def requests(self) -> DialogRequests | None: ...

    def reply(self, ctx: MsgContext, code: int, reason: str | None = None, *,
              headers: Sequence[tuple[str, str]] = ()) -> object: ...

    def to_tag(self, msg: SIPRequest) -> str: ...

    async def database(self, url: str) -> Database: ...
