"""What a module reaches through `self.server`: the running server, seen from a module.

`ModuleHost` is a Protocol, so the real `Server` (routescript.core.server) satisfies it structurally and a
test may hand a module any object with these names. Modules type against it, never against `Server`:
the server's own composition (loading, lifecycle, dispatch, replies) stays its business.

A module that needs less declares its own narrower Protocol (presence does); this is the general one.
Attributes are read-only properties here, so an implementation may narrow them (a `TransactionLayer`
where the Protocol says `TransactionLayer | None`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from routescript.db import Database
    from routescript.script import CompiledScript
    from routescript.script.context import MsgContext
    from routescript.script.registry import Registry
    from routescript.sip import SIPRequest, SIPResponse, SocketInfo
    from routescript.transaction import TransactionLayer
    from routescript.transport import TransportLayer

    from .config import CoreConfig
    from .events import EventBus
    from .module import ModuleSet
    from .relay import Relay
    from .requests import RequestSender
    from .stats import Statistics


class ModuleHost(Protocol):
    """The server as its modules see it (the names the docstring of routescript.core.server lists)."""

    @property
    def config(self) -> CoreConfig:
        """The typed core parameters."""

    @property
    def modules(self) -> ModuleSet:
        """The other module instances of this configuration (`modules.get("presence")`)."""

    @property
    def events(self) -> EventBus:
        """The event bus feeding event_route[...] (`await raise_event("E_...", {...})`)."""

    @property
    def statistics(self) -> Statistics:
        """Named counters by group; a module registers its own."""

    @property
    def registry(self) -> Registry | None:
        """The script's function/pseudo-variable registry of the loaded configuration (None before load)."""

    @property
    def transactions(self) -> TransactionLayer | None:
        """Server and client transactions (None before start())."""

    @property
    def requests(self) -> RequestSender | None:
        """Send a request inside a dialog or to a destination: Via, destination, client transaction
        (routescript/core/requests.py; None before start())."""

    @property
    def relay(self) -> Relay | None:
        """Send a request on to its next hop, statefully or not (core/relay.py; None before start())."""

    @property
    def script(self) -> CompiledScript | None:
        """The script messages run with now (tm runs its reply, failure and branch routes in it)."""

    @property
    def transport(self) -> TransportLayer | None:
        """The sockets' send path (None before start()); modules never import routescript.transport."""

    @property
    def sockets(self) -> Sequence[SocketInfo]:
        """The listening sockets, in configuration order (empty before start())."""

    async def database(self, url: str) -> Database:
        """A routescript.db handle for `url`, opened once and shared; the server closes it at stop()."""

    def reply(self, ctx: MsgContext, code: int, reason: str | None = None, *,
              headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
              content_type: str | None = None) -> SIPResponse:
        """Reply to ctx.msg through its server transaction when there is one, else statelessly."""

    def send_reply(self, ctx: MsgContext, code: int, reason: str | None = None, *,
                   headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                   content_type: str | None = None) -> SIPResponse:
        """A stateless reply (sl_send_reply), even when a transaction exists."""

    def to_tag(self, msg: SIPRequest) -> str:
        """The To tag the server puts in its replies to `msg` (stable across retransmissions)."""

    def is_myself(self, host: str, port: int | None = None) -> bool:
        """Whether host[:port] is one of our sockets or alias= names."""

    async def stop(self) -> bool:
        """Stop cleanly (MI `kill`); False when the stop overran shutdown_timeout."""

    async def reload_routes(self) -> list[Any]:
        """Compile the script again and swap it in if valid; returns the warnings (MI `reload_routes`)."""


if TYPE_CHECKING:
    from .server import Server

    def _server_is_a_module_host(server: Server) -> ModuleHost:
        # mypy proves here that the real Server satisfies the Protocol modules are typed against.
        return server
