"""The change feed: short announcements from one database user to every other one (and to itself).

PostgreSQL has it built in (LISTEN/NOTIFY, see routescript.db.pg_feed); on SQLite the same API works
inside one process (a hub per database file), so a single node runs the same code as a cluster. The
worker processes of one machine share a SQLite file: a `FeedRelay` set by core (`set_feed_relay`; db
never imports workers) carries each committed announcement to the other workers, which hand it to
`deliver_remote` (docs/workers.md, "The local change feed on SQLite", feed B).

What both backends promise:
- `await db.notify(channel, payload)` reaches every callback registered with `db.listen(channel, ...)` on
  any Database of the same database (on PostgreSQL: in any process), the sender's own included.
- Inside `async with db.transaction():` the announcement is sent when the transaction commits, and
  dropped when it (or the savepoint it was made in) rolls back.
- Announcements are delivered in the order they were committed, each once, to the listeners connected
  at that moment; an announcement sent while a listener was cut off is lost for it. That is why
  `listen(..., on_reconnect=cb)` exists: cb is called once the listener is back, so its owner can
  re-read what it may have missed from the tables (resync).
- Payloads are text shorter than 8000 bytes (UTF-8; MAX_PAYLOAD): announce keys, not bodies (a small
  row may ride along, as presence's workers do: the receiver still reads when it is not sure).
  PostgreSQL collapses identical (channel, payload) pairs sent in one transaction; the SQLite hub does not.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol

from routescript.db.errors import DatabaseError

log = logging.getLogger("routescript.db")

# PostgreSQL: "the payload string ... must be shorter than 8000 bytes" (default configuration).
MAX_PAYLOAD = 7999
# A channel is a lower-case identifier: PostgreSQL folds unquoted names, so mixed case invites mistakes.
CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
MAX_PENDING_CALLBACKS = 10_000  # bound: async callbacks still running; beyond, announcements are dropped

FeedCallback = Callable[[str, str], "Awaitable[None] | None"]
ReconnectCallback = Callable[[], "Awaitable[None] | None"]


def check_channel(channel: Any) -> str:
    if not isinstance(channel, str) or not CHANNEL.match(channel):
        raise DatabaseError(f"bad channel name {channel!r}: expected a lower-case identifier "
                            f"([a-z_][a-z0-9_]*, at most 63 characters)")
    return channel


def check_payload(payload: Any) -> str:
    if not isinstance(payload, str):
        raise DatabaseError(f"a notification payload is text, got {type(payload).__name__}")
    if "\x00" in payload:
        raise DatabaseError("a notification payload cannot contain NUL")
    size = len(payload.encode("utf-8"))
    if size > MAX_PAYLOAD:
        raise DatabaseError(f"notification payload of {size} bytes is over the {MAX_PAYLOAD}-byte limit "
                            f"(announce keys, not bodies)")
    return payload


class Listeners:
    """The callbacks of one Database, by channel, and the dispatching of what arrives.

    Callbacks are plain callables; one that returns an awaitable has it run as a task (tracked, its
    failure logged). A failing callback never stops the others nor the feed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.by_channel: dict[str, list[FeedCallback]] = {}
        self.on_reconnect: list[ReconnectCallback] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dropped = 0  # announcements not dispatched because too many callbacks were still running

    @property
    def channels(self) -> list[str]:
        return list(self.by_channel)

    def add(self, channel: str, callback: FeedCallback, on_reconnect: ReconnectCallback | None) -> bool:
        """Register; True when the channel is new (the backend must start listening to it)."""
        new = channel not in self.by_channel
        self.by_channel.setdefault(channel, []).append(callback)
        if on_reconnect is not None:
            self.on_reconnect.append(on_reconnect)
        return new

    def remove(self, channel: str, callback: FeedCallback | None = None,
               on_reconnect: ReconnectCallback | None = None) -> bool:
        """Unregister `callback` (None: every callback of the channel); True when the channel has no
        callback left (the backend stops listening to it)."""
        if on_reconnect is not None and on_reconnect in self.on_reconnect:
            self.on_reconnect.remove(on_reconnect)
        cbs = self.by_channel.get(channel)
        if cbs is None:
            return False
        if callback is None:
            cbs.clear()
        elif callback in cbs:
            cbs.remove(callback)
        if cbs:
            return False
        del self.by_channel[channel]
        return True

    def dispatch(self, channel: str, payload: str) -> None:
        for cb in list(self.by_channel.get(channel, ())):
            self._call(cb, channel, payload)

    def reconnected(self) -> None:
        for cb in list(self.on_reconnect):
            self._call(cb)

    def _call(self, cb: Callable[..., Any], *args: Any) -> None:
        try:
            result = cb(*args)
        except Exception:
            log.exception("%s: change-feed callback %r failed", self.url, cb)
            return
        if inspect.isawaitable(result):
            if len(self._tasks) >= MAX_PENDING_CALLBACKS:
                self.dropped += 1
                log.warning("%s: %d feed callbacks still running; one announcement dropped",
                            self.url, len(self._tasks))
                if inspect.iscoroutine(result):
                    result.close()
                return
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: change-feed callback failed", self.url, exc_info=task.exception())

    async def close(self) -> None:
        self.by_channel.clear()
        self.on_reconnect.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


class FeedRelay(Protocol):
    """Carries an announcement committed in this process to the other processes using the same SQLite
    file (the worker processes of one machine). `db_key` names the file (SqliteDatabase's hub key, its
    normalised path). Called at commit, on the loop: it must not block (one sendto per peer), and a
    failure it cannot repair itself is for the supervisor's Resync (on_reconnect) to repair."""

    def send(self, db_key: str, channel: str, payload: str) -> None: ...


class LocalHub:
    """The in-process feed of one SQLite database file: every Database opened on the file in this process
    registers its Listeners here. Other processes using the same file are reached through the relay
    (`set_feed_relay`) when core set one (worker processes); without it, only this process."""

    _hubs: ClassVar[dict[str, LocalHub]] = {}
    relay: ClassVar[FeedRelay | None] = None
    relay_failures: ClassVar[int] = 0   # sends the relay raised on (logged; repaired by a resync)

    def __init__(self, key: str) -> None:
        self.key = key
        self.members: list[Listeners] = []

    @classmethod
    def join(cls, key: str, listeners: Listeners) -> LocalHub:
        hub = cls._hubs.get(key)
        if hub is None:
            hub = cls._hubs[key] = LocalHub(key)
        if listeners not in hub.members:
            hub.members.append(listeners)
        return hub

    @classmethod
    def leave_key(cls, key: str, listeners: Listeners) -> None:
        hub = cls._hubs.get(key)
        if hub is not None:
            hub.leave(listeners)

    def leave(self, listeners: Listeners) -> None:
        if listeners in self.members:
            self.members.remove(listeners)
        if not self.members and LocalHub._hubs.get(self.key) is self:
            del LocalHub._hubs[self.key]

    @classmethod
    def publish_to(cls, key: str, channel: str, payload: str) -> None:
        """A committed announcement: delivered to this process's listeners and given to the relay."""
        hub = cls._hubs.get(key)
        if hub is not None:  # nobody listens here on this database: nothing to deliver locally
            hub.publish(channel, payload)
        relay = cls.relay
        if relay is not None:
            try:
                relay.send(key, channel, payload)
            except Exception:
                # The commit is done and cannot be undone: the peers catch up at their next resync.
                cls.relay_failures += 1
                log.exception("%s: relaying an announcement on %s to the other workers failed", key, channel)

    @classmethod
    def deliver_remote(cls, key: str, channel: str, payload: str) -> None:
        """An announcement another process committed on the file `key` (its relay sent it): dispatched
        to this process's listeners only, never relayed again. DatabaseError for a bad channel or
        payload (the sender's bug: the caller logs it). Dispatched at once, not on the next loop
        iteration: the caller (the worker's inbox reader) keeps the order in which another worker's
        announcements and the messages it sent after them arrive (a PUBLISH sent after the 200 of the
        announced one must not be handled before the announcement is)."""
        check_channel(channel)
        check_payload(payload)
        hub = cls._hubs.get(key)
        if hub is not None:
            for member in list(hub.members):
                member.dispatch(channel, payload)

    @classmethod
    def reconnected_all(cls) -> None:
        """Announcements from other processes may have been lost (a worker died between its commit and
        its relay, a peer's inbox was full): every listener in this process gets its on_reconnect, as
        after a PostgreSQL LISTEN connection came back, and re-reads what it may have missed."""
        for hub in list(cls._hubs.values()):
            for member in list(hub.members):
                member.reconnected()

    def publish(self, channel: str, payload: str) -> None:
        """Deliver on the next loop iteration (never inside the sender's call, as on PostgreSQL)."""
        loop = asyncio.get_running_loop()
        for member in list(self.members):
            loop.call_soon(member.dispatch, channel, payload)


def set_feed_relay(relay: FeedRelay | None) -> None:
    """Core, in a worker process: every announcement committed on a SQLite file from now on also goes to
    `relay` (None: this process only, as without workers)."""
    LocalHub.relay = relay


def deliver_remote(db_key: str, channel: str, payload: str) -> None:
    """Core, in a worker process: an announcement another worker relayed (see LocalHub.deliver_remote)."""
    LocalHub.deliver_remote(db_key, channel, payload)


def resync_local() -> None:
    """Core, in a worker process: the supervisor's Resync (see LocalHub.reconnected_all)."""
    LocalHub.reconnected_all()
