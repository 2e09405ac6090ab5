"""pua - the server's own publications (OpenSIPS 3.4 pua, its PUBLISH side), for pua_dialoginfo and other
modules. docs/modules/pua.md lists every parameter with where we differ.

OpenSIPS's pua exports no script function for publishing (pua_update_contact is for its SUBSCRIBE side,
not built here); modules reach it through `bind_pua(server).publish(...)`. The table of publications is
sans-IO (table.py); publisher.py delivers each PUBLISH in-process to our presence module or over SIP.
With `db_url`, OpenSIPS's `pua` table keeps publications and subscriptions across restarts (rows.py,
store.py: each worker its own rows, written back every update_period and at stop).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from routescript.core.module import ConfigError, Module, Param

from routescript.db.schema import IDENTIFIER, SCHEMA
from routescript.db.url import check_db_url

from .publisher import LocalPresence, Publisher, publish_request
from .store import PuaStore
from .subscriber import Subscriber, subscribe_request
from .subscriptions import SubKey, SubSend, SubTable
from .table import DEFAULT_MAX_RECORDS, Follows, Op, PuaFull, PubKey, PubRecord, PubTable, Send, Sender

__all__ = ["MODULE", "Follows", "Op", "PuaFull", "PuaModule", "PubKey", "PubRecord", "PubTable", "PuaStore",
           "Publisher", "Send", "Sender", "SubKey", "SubSend", "SubTable", "Subscriber", "bind_pua",
           "publish_request", "subscribe_request"]

log = logging.getLogger("routescript.pua")

NO_CLUSTERER = ("OpenSIPS's clusterer is not built (pua clustering shares presentities through clusterer "
                "sharing tags); run one pua per presence server")
NO_SUBSCRIBE = ("pua_update_contact is not built (pua's subscriptions are pua_bla's, made from REGISTERs; "
                "pua_mi and pua_usrloc are not built either)")


_BOUND: weakref.WeakKeyDictionary[Any, PuaModule] = weakref.WeakKeyDictionary()


def bind_pua(server: Any) -> PuaModule | None:
    """OpenSIPS bind_pua: the pua module instance of `server` (from its __init__ on, so a module's
    check() finds it), or None."""
    return _BOUND.get(server)


def _non_negative(value: int) -> None:
    if value < 0:
        raise ValueError("must not be negative")


def _positive(value: int) -> None:
    if value < 1:
        raise ValueError("must be at least 1")


def _table_name(value: str) -> None:
    if not IDENTIFIER.match(value):
        raise ValueError("not a table name (letters, digits and _)")


class PuaModule(Module):
    name = "pua"
    db_url_from_default = "db_url"   # OpenSIPS: init_db_url(db_url, ...) - required there, optional here
    uses = ("presence",)   # delivers in-process to it: started after it, drained before it stops
    params = (
        Param("hash_size", int, 9, "power of two of OpenSIPS's table size (sizing hint only here)"),
        Param("db_url", str, None, "the database of the pua table (default: db_default_url; unset: "
              "publications and subscriptions in memory only)", check=check_db_url),
        Param("db_table", str, "pua", "the pua table's name (OpenSIPS 3.4's pua, version 8)",
              check=_table_name),
        Param("min_expires", int, 0, "a shorter non-zero Expires is raised to this", check=_non_negative),
        Param("default_expires", int, 3600, "Expires of a publication that names none", check=_positive),
        Param("update_period", int, 30, "seconds between refresh checks at most", check=_positive),
        Param("max_publications", int, DEFAULT_MAX_RECORDS, "publications held at most (routescript's own)",
              check=_non_negative),
        Param("cluster_id", int, 0, later=NO_CLUSTERER),
        Param("cluster_sharing_tag", str, None, later=NO_CLUSTERER),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.refused = {"pua_update_contact": NO_SUBSCRIBE}
        self.clock = time.time
        self.table = PubTable(default_expires=self.param("default_expires"),
                              min_expires=self.param("min_expires"),
                              max_records=self.param("max_publications"))
        self.publisher = Publisher(self.table, clock=self._now, local=self._local_presence,
                                   send_sip=self._send_sip, update_period=self.param("update_period"))
        self.subscriptions = SubTable(max_records=self.param("max_publications"))
        self.subscriber = Subscriber(self.subscriptions, clock=self._now, send=self._send_subscribe,
                                     update_period=self.param("update_period"))
        self._timer: asyncio.Task[None] | None = None
        self._sub_timer: asyncio.Task[None] | None = None
        self.store: PuaStore | None = None
        self._writer: asyncio.Task[None] | None = None
        self.slot, self.n_total = 0, 1
        self._stopped = False    # stop() began: nothing new is sent (no one would wait for it)
        try:
            _BOUND[server] = self
        except TypeError:  # a server that cannot be weakly referenced (tests): no binding
            pass

    def _now(self) -> float:
        return self.clock()   # tests replace self.clock

    def check(self) -> None:
        if self.param("min_expires") and self.param("min_expires") > self.param("default_expires"):
            raise ConfigError("pua: min_expires is above default_expires")
        table = self.param("db_table")
        if table != "pua" and table in SCHEMA:
            raise ConfigError(f"pua: db_table {table!r} is the name of another OpenSIPS table")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.param("db_url"):
            await self._open_table()
            self._writer = loop.create_task(self._write_every_period())
        self._timer = loop.create_task(self.publisher.run())
        self._sub_timer = loop.create_task(self.subscriber.run())

    async def _open_table(self) -> None:
        """The pua table (made when missing; `db_table` another name of its shape), this worker's rows
        read back into the tables before any message is handled (OpenSIPS db_restore)."""
        db = await self.server.database(self.param("db_url"))
        table = self.param("db_table")
        if table != "pua":
            db.declare_table(table, "pua")
        await db.ensure_schema([table])
        self.store = PuaStore(db, table, slot=self.slot, n_total=self.n_total, clock=self._now,
                              update_period=self.param("update_period"))
        await self.store.load(self.table, self.subscriptions)
        log.info("pua: %d publication(s) and subscription(s) loaded from table %s (%d row(s) skipped)",
                 self.store.loaded, table, self.store.skipped)

    async def _write_every_period(self) -> None:
        """OpenSIPS's pua_dbupdate timer: the changes of the last update_period written back."""
        while True:
            await asyncio.sleep(self.param("update_period"))
            await self.write_back()

    async def write_back(self) -> None:
        """The records' changes written to the pua table now (a failure is logged: the next one retries)."""
        if self.store is None:
            return
        try:
            await self.store.write_back(self.table, self.subscriptions)
        except Exception as exc:  # noqa: BLE001 - DatabaseError or a driver's: logged, retried next period
            log.error("pua table %s: not written (retried in %d s): %s", self.store.table,
                      self.param("update_period"), exc)

    async def stop(self) -> None:
        """The refresh timers end, then the PUBLISHes under way are waited for (in-process ones are stored
        by presence, which stops after pua: Module.uses). A publish() after this is refused."""
        self._stopped = True
        timers = [t for t in (self._timer, self._sub_timer, self._writer) if t is not None]
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        self._timer = self._sub_timer = self._writer = None
        await self.publisher.drain()
        await self.write_back()   # OpenSIPS destroy(): the table as we leave it

    # --- workers (routescript.workers.node.WorkerStateModule) -------------------------------------
    def run_as_worker(self, identity: Any) -> None:
        """In worker `slot` of `n_total`: only this worker's rows of the pua table are loaded and
        written (rows.row_owner, docs/workers.md 3)."""
        self.slot, self.n_total = int(identity.slot), int(identity.n_total)

    async def adopt_worker(self, slot: int) -> int:
        """Nothing is taken over: a dead worker's publications and subscriptions wait in the table for
        that slot's restart (taking them here would leave two workers refreshing them once it is back)."""
        return 0

    def resync(self) -> None:
        """Nothing is announced between workers: each record lives in the worker of its dialog."""

    # --- the API (OpenSIPS pua_api_t send_publish) ----------------------------------------------
    def publish(self, pres_uri: str, event: str, body: bytes | None, *, id: str = "",
                expires: int | None = None, content_type: str = "", outbound_proxy: str | None = None,
                etag: str | None = None, on_etag: Callable[[str | None], None] | None = None,
                sender: Sender | None = None, follows: Follows | None = None) -> bool:
        """Publish `body` as the state of (pres_uri, event, id) for `expires` seconds (None:
        default_expires; 0: remove it). Synchronous (callable from dialog callbacks): the PUBLISH
        leaves in a task, and its refreshes, 412 and 423 are handled here. False when refused.
        `etag` / `on_etag`: the ETag kept across a restart by the caller, and the hook told each new one
        (Publisher.publish). `sender`: (header name, URI) of pua_bla's Sender header - over SIP a header
        of the PUBLISH, in-process handle_publish's sender_uri (that watcher is not notified).
        `follows`: (Call-ID, our tag or "") of the dialog the publication follows, whose worker owns its
        row in the pua table (pua_dialoginfo: its call; pua_bla: the subscription of the NOTIFY)."""
        if self._stopped:
            log.warning("pua: stopping: publication (%s) for %s not sent", event, pres_uri)
            return False
        return self.publisher.publish(pres_uri, event, body, id=id, expires=expires,
                                      content_type=content_type, outbound_proxy=outbound_proxy, etag=etag,
                                      on_etag=on_etag, sender=sender, follows=follows)

    # --- the API (OpenSIPS pua_api_t send_subscribe, is_dialog) ------------------------------------
    def subscribe(self, pres_uri: str, watcher_uri: str, event: str, expires: int, *, to_uri: str,
                  contact: str, outbound_proxy: str | None = None) -> bool:
        """Subscribe to `event` of `pres_uri` as `watcher_uri` (To: `to_uri`, Contact: `contact`) for
        `expires` seconds, refreshed until then; 0 unsubscribes. Synchronous; False when refused (also
        once stop() began)."""
        if self._stopped:
            log.warning("pua: stopping: subscription of %s to %s (%s) not sent", watcher_uri, pres_uri, event)
            return False
        return self.subscriber.subscribe(pres_uri, watcher_uri, event, expires, to_uri=to_uri,
                                         contact=contact, outbound_proxy=outbound_proxy)

    def is_dialog(self, call_id: str, our_tag: str, their_tag: str, *, terminated: bool = False) -> bool:
        """Does a NOTIFY belong to one of our subscriptions (Subscriber.is_dialog)?"""
        return self.subscriber.is_dialog(call_id, our_tag, their_tag, terminated=terminated)

    # --- delivery ---------------------------------------------------------------------------------
    def _local_presence(self, outbound_proxy: str | None) -> LocalPresence | None:
        """Our presence module when it handles requests and the publication is for it."""
        from routescript.modules.presence import bind_presence

        presence = bind_presence(self.server)
        if presence is None or presence.service is None:
            return None
        if outbound_proxy:
            from routescript.sip import ParseError, parse_uri

            try:
                proxy = parse_uri(outbound_proxy.strip().strip("<>"))
            except ParseError:
                return None
            if not self.server.is_myself(proxy.host, proxy.port):
                return None
        local: LocalPresence = presence   # PresenceModule.publish is LocalPresence's
        return local

    def _send_sip(self, send: Send, on_answer: Any) -> None:
        from routescript.core.requests import OutgoingRequest

        requests = self.server.requests
        if requests is None:
            raise ValueError("the server is not started (no request sender)")
        ruri, headers, body = publish_request(send)

        def on_final(response: Any) -> None:
            fields = {name: response.header(name) for name in ("SIP-ETag", "Expires", "Min-Expires")}
            on_answer(response.status, {k.lower(): v for k, v in fields.items() if v is not None})

        requests.send_to(OutgoingRequest("PUBLISH", ruri, headers, body), on_final)

    def _send_subscribe(self, send: SubSend, request: Any, on_final: Any) -> None:
        requests = self.server.requests
        if requests is None:
            raise ValueError("the server is not started (no request sender)")
        if send.to_tag is None:
            requests.send_to(request, on_final, next_hop=send.outbound_proxy)
        else:
            requests.send_in_dialog(request, on_final)


MODULE = PuaModule
