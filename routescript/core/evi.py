"""External event subscribers: OpenSIPS's Event Interface (evi) subscriptions and its transport modules.

An external application subscribes to an event with the MI command
`event_subscribe(event, socket[, expire])`; `socket` starts with a transport's protocol name
(`udp:127.0.0.1:8888`, `unix:/tmp/events.sock` for event_datagram). When the event is raised on the
EventBus (`server.events.raise_event(...)`, which also runs `event_route[...]`), every live subscriber
of it gets it through its transport.

As OpenSIPS's evi/event_interface.c:
  - the default expire is 3600 s; `expire = 0` removes the subscription (OpenSIPS marks it expired at
    once and drops it at the next raise - the effect is the same);
  - a new subscription for the same event, transport and socket refreshes the existing one
    (subscription time reset, expire replaced);
  - expired subscribers are removed when met (on raise and on listing), so no timer is needed.
The clock is injected (`clock`) so tests move time instead of sleeping.

A transport module (modules/event_datagram) registers an `EventTransport` (`register_transport`).
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .events import EventBus, EventParams

if TYPE_CHECKING:
    from .host import ModuleHost

log = logging.getLogger("routescript.evi")

DEFAULT_EXPIRE = 3600  # OpenSIPS DEFAULT_EXPIRE (seconds)
MAX_SUBSCRIBERS = 1024  # all events together (STYLE 7)


class SubscribeError(ValueError):
    """A subscription that cannot be made: unknown event, no transport for the socket, bad socket."""


class EventTransport(Protocol):
    """What a transport module provides (OpenSIPS evi_export_t: proto, parse, print, match, raise).

    `sock` is the transport's own reply-socket value (a hashable it made in parse()); the interface
    only compares and hands it back, so it stays `Any` here."""

    proto: str

    async def parse(self, address: str) -> Any:
        """The reply socket for `address` (the text after "proto:"): a hashable value, equal for
        two addresses that name the same destination. Raise ValueError("why") when it is bad."""
        ...

    def print(self, sock: Any) -> str:
        """The socket as listed by subscribers_list, without the "proto:" prefix."""
        ...

    def raise_event(self, name: str, params: EventParams, sock: Any) -> Awaitable[None] | None:
        """Send one event to one subscriber (may return an awaitable). Failures are logged by the
        caller and never reach the raiser."""
        ...


@dataclass(slots=True)
class Subscriber:
    event: str
    transport: EventTransport
    sock: Any
    expire: int | None  # seconds; None = never (a subscription made without expiry)
    subscribed_at: float

    @property
    def socket(self) -> str:
        return f"{self.transport.proto}:{self.transport.print(self.sock)}"

    def expired(self, now: float) -> bool:
        return self.expire is not None and now >= self.subscribed_at + self.expire


class EventInterface:
    """The external subscribers of one server's EventBus."""

    def __init__(self, bus: EventBus, *, clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self.clock = clock
        self._transports: dict[str, EventTransport] = {}
        self._subscribers: list[Subscriber] = []
        # The events we listen to on the bus: only those with a subscriber, so that EventBus.wanted()
        # stays False for the others and their raisers skip the work.
        self._listening: set[str] = set()

    # ---------------------------------------------------------------- transports
    def register_transport(self, transport: EventTransport) -> None:
        """Make `proto:` sockets usable. A protocol taken twice is a bug (OpenSIPS refuses it too)."""
        proto = transport.proto
        if not proto or ":" in proto:
            raise ValueError(f"bad event transport protocol {proto!r}")
        if proto in self._transports and self._transports[proto] is not transport:
            raise ValueError(f"event transport protocol '{proto}' already registered")
        self._transports[proto] = transport

    @property
    def protocols(self) -> list[str]:
        return list(self._transports)

    # ---------------------------------------------------------------- subscriptions
    async def subscribe(self, event: str, socket: str,
                        expire: int | None = DEFAULT_EXPIRE) -> Subscriber | None:
        """Add or refresh a subscription; `expire` 0 removes it (returns None then). SubscribeError
        when the event is not declared, no transport serves the socket, or the socket is bad."""
        if event not in self.bus.declared:
            raise SubscribeError(f"unknown event {event}")
        transport, sock = await self._parse(socket)
        now = self.clock()
        self._prune(now)
        found = self._find(event, transport, sock)
        if expire == 0:
            if found is not None:
                self._subscribers.remove(found)
                self._listen()
                log.info("event %s: %s unsubscribed", event, found.socket)
            return None
        if found is not None:
            found.subscribed_at = now
            found.expire = expire
            return found
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            raise SubscribeError(f"too many event subscribers (at most {MAX_SUBSCRIBERS})")
        sub = Subscriber(event, transport, sock, expire, now)
        self._subscribers.append(sub)
        self._listen()
        log.info("event %s: %s subscribed (expire %s)", event, sub.socket,
                 expire if expire is not None else "never")
        return sub

    async def find(self, event: str, socket: str) -> Subscriber | None:
        """The live subscriber of `event` at `socket`, if any (SubscribeError for a bad socket)."""
        transport, sock = await self._parse(socket)
        self._prune(self.clock())
        return self._find(event, transport, sock)

    def subscribers(self, event: str | None = None) -> list[Subscriber]:
        """Live subscribers (of `event`, or all), newest first as OpenSIPS lists them."""
        self._prune(self.clock())
        subs = [s for s in self._subscribers if event is None or s.event == event]
        return list(reversed(subs))

    async def _parse(self, socket: str) -> tuple[EventTransport, Any]:
        proto, sep, address = socket.partition(":")
        transport = self._transports.get(proto)
        if not sep or transport is None:
            known = ", ".join(f"{p}:" for p in self._transports) or "none: load event_datagram"
            raise SubscribeError(f"no event transport for socket '{socket}' (known: {known})")
        try:
            sock = await transport.parse(address)
        except ValueError as exc:
            raise SubscribeError(f"bad socket '{socket}': {exc}") from None
        return transport, sock

    def _find(self, event: str, transport: EventTransport, sock: Any) -> Subscriber | None:
        for sub in self._subscribers:
            if sub.event == event and sub.transport is transport and sub.sock == sock:
                return sub
        return None

    def _prune(self, now: float) -> None:
        if any(s.expired(now) for s in self._subscribers):
            for s in [s for s in self._subscribers if s.expired(now)]:
                log.info("event %s: subscription of %s expired", s.event, s.socket)
            self._subscribers = [s for s in self._subscribers if not s.expired(now)]
            self._listen()

    def _listen(self) -> None:
        """Listen on the bus to exactly the events that have a subscriber."""
        wanted = {s.event for s in self._subscribers}
        for name in wanted - self._listening:
            self.bus.subscribe(self._on_event, name)
        for name in self._listening - wanted:
            self.bus.unsubscribe(self._on_event, name)
        self._listening = wanted

    # ---------------------------------------------------------------- delivery
    async def _on_event(self, name: str, params: EventParams) -> None:
        if not self._subscribers:
            return
        self._prune(self.clock())
        for sub in [s for s in self._subscribers if s.event == name]:
            try:
                result = sub.transport.raise_event(name, params, sub.sock)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - one subscriber's failure never stops the others
                log.error("event %s: cannot notify %s: %s", name, sub.socket, exc)


# One EventInterface per EventBus (so per server), kept here rather than as an attribute set on the server.
_INTERFACES: weakref.WeakKeyDictionary[EventBus, EventInterface] = weakref.WeakKeyDictionary()


def event_interface(server: ModuleHost) -> EventInterface:
    """The server's EventInterface, made on first use over `server.events`."""
    evi = _INTERFACES.get(server.events)
    if evi is None:
        evi = _INTERFACES[server.events] = EventInterface(server.events)
    return evi
