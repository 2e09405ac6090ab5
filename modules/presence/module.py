"""PresenceModule: the presence module's exports (OpenSIPS module_exports) and its lifetime."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from routescript.core.host import ModuleHost
from routescript.core.module import Arg, ConfigError, MIError, Module, Param, script_function
from routescript.db.url import check_db_url
from routescript.core.netlist import NetworkList
from routescript.script.context import REQUEST_ROUTE

from .bla import parse_pv_spec
from .clustering import WatcherInterest
from .events import EventRegistry, PresenceEvent
from .limits import DEFAULT_MAX_PRESENTITIES, DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE
from .mi import PresenceMI
from .presentity import DEFAULT_MAX_AGGREGATED_BODY_SIZE
from .publish import LocalPublishResult
from .service import PresenceService, PresenceSettings
from .storage import PresenceStore

if TYPE_CHECKING:
    from .cluster import ClusterConfig, ClusterNode
    from .membership import WorkerIdentity

log = logging.getLogger("routescript.presence")

_BOUND: weakref.WeakKeyDictionary[Any, PresenceModule] = weakref.WeakKeyDictionary()
LIBRARY_MODE = ("presence runs as a library (no message processing) because modparam(\"presence\", "
                "\"db_url\", ...) is not set; set db_url to handle PUBLISH/SUBSCRIBE")


def bind_presence(server: Any) -> PresenceModule | None:
    """OpenSIPS's bind_presence: the presence module instance of a server (event packages call
    `bind_presence(self.server).add_event(PresenceEvent(...))` from their check())."""
    return _BOUND.get(server)


def _pres_uri(text: str) -> str:
    """A presentity as the tables key it: "sip:user@host" (port and parameters dropped); raises MIError."""
    from routescript.sip import ParseError, parse_uri

    from .storage import join_pres_uri

    try:
        uri = parse_uri(text.strip())
    except ParseError:
        raise MIError(f"bad presentity URI '{text}'") from None
    return join_pres_uri(uri.user or "", uri.host)


async def _maybe_await(value: Any) -> Any:
    import inspect

    return await value if inspect.isawaitable(value) else value


def _non_negative(value: int) -> None:
    if value < 0:
        raise ValueError("must not be negative")


def _positive(value: int) -> None:
    if value < 1:
        raise ValueError("must be at least 1")


def _bool01(value: int) -> None:
    if value not in (0, 1):
        raise ValueError("must be 0 or 1")


def _pv_spec(value: str) -> None:
    parse_pv_spec(value)


MAX_WAITING_SUBS_DAYSNO = 30

NO_FEDERATION = ("OpenSIPS's clusterer federation (sharing tags) is not built; presence nodes share one "
                 "PostgreSQL database instead: cluster_id and cluster_sharing_tag, see docs/cluster.md")


def _no_sharing_tag(value: Any) -> Any:
    """handle_subscribe's sharing_tag (OpenSIPS clusterer federation) is refused: a literal at load time
    with file:line:col, a variable's value when the call runs (logged with the Call-ID)."""
    raise ValueError(f"the sharing_tag argument is not supported: {NO_FEDERATION}")


def _truthy(value: Any) -> bool:
    """handle_subscribe's force_active: "1" (the documented string) or 1 (OpenSIPS 3.x int)."""
    return str(value).strip().startswith("1") if value is not None else False


class PresenceModule(PresenceMI, Module):
    name = "presence"
    events = ("E_PRESENCE_PUBLISH", "E_PRESENCE_EXPOSED")
    params = (
        Param("db_url", str, None, "database URL; unset = library mode", check=check_db_url),
        Param("presentity_table", str, "presentity"),
        Param("active_watchers_table", str, "active_watchers"),
        Param("watchers_table", str, "watchers"),
        Param("clean_period", int, 100, "seconds between expiry runs; <= 0 disables"),
        Param("db_update_period", int, 100, "seconds between subscription flushes; <= 0 disables"),
        Param("expires_offset", int, 0, check=_non_negative),
        Param("max_expires_subscribe", int, 3600, check=_non_negative),
        Param("max_expires_publish", int, 3600, check=_non_negative),
        Param("server_address", str, None),
        Param("fallback2db", int, 0, "1: lookups missing in memory continue in the database"),
        Param("subs_htable_size", int, 9, "power of two of the table size (sizing hint only here)"),
        Param("pres_htable_size", int, 9, "power of two of the table size (sizing hint only here)"),
        Param("enable_sphere_check", int, 0,
              "1: pres-rules sphere conditions see the RPID <sphere> published"),
        Param("waiting_subs_daysno", int, 3, "days a pending/waiting watcher decision is kept (max 30)",
              check=_non_negative),
        Param("mix_dialog_presence", int, 0,
              "1: presence watchers of a user with a live dialog (event dialog) see him on the phone",
              check=_bool01),
        Param("bla_presentity_spec", str, None, "pseudo-variable holding the BLA presentity URI",
              check=_pv_spec),
        Param("bla_fix_remote_target", int, 1,
              "1: IP remote targets in dialog;sla NOTIFY bodies get the domain"),
        Param("notify_offline_body", int, 0),
        Param("end_sub_on_timeout", int, 1),
        # Caps on the state kept (routescript's own; limits.py and docs/modules/presence.md): over one, a
        # new SUBSCRIBE/PUBLISH gets 503 + Retry-After and a log line. 0 = no cap.
        Param("max_subscriptions", int, DEFAULT_MAX_SUBSCRIPTIONS, "subscriptions held at most",
              check=_non_negative),
        Param("max_subscriptions_per_source", int, DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE,
              "subscriptions held at most per watcher source address", check=_non_negative),
        Param("max_presentities", int, DEFAULT_MAX_PRESENTITIES,
              "publications (presentity table rows) held at most", check=_non_negative),
        Param("trusted_sources", str, None,
              "IP addresses/networks exempt from max_subscriptions_per_source (an edge proxy)",
              check=NetworkList.parse),
        Param("max_aggregated_body_size", int, DEFAULT_MAX_AGGREGATED_BODY_SIZE,
              "bytes the bodies of one presentity's publications (one event) may total; a PUBLISH "
              "beyond gets 413", check=_positive),
        # Several nodes on one PostgreSQL database (docs/cluster.md).
        Param("cluster_id", int, 0, "non-zero: nodes with this id share subscriptions through the database",
              check=_non_negative),
        Param("cluster_sharing_tag", str, None, "this node's id, kept in active_watchers.sharing_tag"),
        Param("cluster_pres_events", str, None, "events whose changes the nodes announce (default: all)"),
        Param("cluster_ping_interval", int, 5, "seconds between heartbeats in rs_nodes"),
        Param("cluster_node_timeout", int, 30, "a node silent this long is taken over; 0: only by MI",
              check=_non_negative),
        # OpenSIPS's clusterer-based federation: not built (our nodes share through PostgreSQL instead).
        Param("cluster_federation_mode", str, "disabled", later=NO_FEDERATION),
        Param("cluster_sharing_tags", str, None, later=NO_FEDERATION),
        Param("cluster_be_active_shtag", str, None, later=NO_FEDERATION),
    )

    def __init__(self, server: ModuleHost, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.registry = EventRegistry()
        self.service: PresenceService | None = None
        self._stopping = False   # stop() began: no in-process PUBLISH is taken any more
        self._publish_accepted: Any = None       # presence:accepted_publishes / rejected_publishes
        self._publish_rejected: Any = None
        self._timers: list[asyncio.Task[None]] = []
        self._own_db: Any = None
        self.cluster: ClusterNode | None = None   # when cluster_id is set or as a worker (started)
        self.cluster_config: Any = None           # its ClusterConfig, checked at load time
        self.worker: WorkerIdentity | None = None  # run_as_worker: one of several worker processes
        self.interest: WatcherInterest | None = None   # use_presentity_interest (workers, affinity "uri")
        if not self.param("db_url"):
            # Library mode (OpenSIPS: no message processing without db_url): the module loads for
            # the event packages' sake, and every call of its script functions is a load-time error
            # at its file:line:col. The impls still refuse (-1) should one be reached anyway.
            self.refused = {
                "handle_publish": LIBRARY_MODE, "handle_subscribe": LIBRARY_MODE}
        try:
            _BOUND[server] = self
        except TypeError:  # a server that cannot be weakly referenced (tests): no binding
            pass

    # --- bind_presence API (OpenSIPS presence_api_t; guide: docs/event-packages.md) ---------------
    def add_event(self, event: PresenceEvent) -> PresenceEvent:
        """Register an event package (call it from your module's check()). Registering a name twice
        keeps the first package and returns it."""
        return self.registry.add_event(event)

    def contains_event(self, name: str) -> PresenceEvent | None:
        """The package registered for an event name ("dialog;sla"), or None."""
        return self.registry.contains_event(name)

    def search_event(self, package: str, params: Any = ()) -> PresenceEvent | None:
        """The package for a parsed Event header (package, params)."""
        return self.registry.search_event(package, params)

    def get_event_list(self) -> str:
        """The Allow-Events value: every registered package, newest first."""
        return self.registry.get_event_list()

    async def update_watchers_status(self, pres_uri: str, event: PresenceEvent, rules_doc: Any = None) -> int:
        """Announce a change of `pres_uri`'s authorization rules: every watcher is judged again and those
        whose state changed are notified. `rules_doc` None: read with the package's get_rules_doc.
        Returns how many subscriptions changed state (0 in library mode)."""
        if self.service is None:
            return 0
        return await self.service.update_watchers_status(_pres_uri(pres_uri), event, rules_doc)

    def get_sphere(self, pres_uri: str) -> str | None:
        """The RPID sphere of `pres_uri`'s newest presence publication ("work", "home"...), or None."""
        return self.service.get_sphere(_pres_uri(pres_uri)) if self.service is not None else None

    def contains_presence(self, pres_uri: str) -> bool:
        """True when `pres_uri` has published presence state that is still live."""
        return self.service is not None and self.service.contains_presence(_pres_uri(pres_uri))

    async def publish(self, pres_uri: str, event: str, body: bytes | None, *, etag: str | None = None,
                      expires: int | None = None, content_type: str | None = None,
                      sender: str | None = None) -> LocalPublishResult | None:
        """An in-process PUBLISH (the pua module's delivery to this server): the same code as a PUBLISH
        request for `pres_uri` (a SIP URI) and `event` (a registered package name), answered with what
        the reply would say. None in library mode (no db_url: nothing is handled here) and once stop()
        began (its store is being closed: the publication would be lost or wait forever; pua stops
        before presence - Module.uses -, so only a late caller meets this)."""
        if self.service is None:
            return None
        if self._stopping:
            log.warning("presence: stopping: in-process PUBLISH (%s) for %s refused", event, pres_uri)
            return None
        result = await self.service.publish_local(pres_uri, event, body, etag=etag, expires=expires,
                                                  content_type=content_type, sender=sender)
        counter = self._publish_accepted if result.status < 300 else self._publish_rejected
        if counter is not None:
            counter.inc()
        return result

    async def refresh_watchers_rules(self, pres_uri: str, event: str) -> None:
        """MI refreshWatchers with refresh type 0: `pres_uri`'s rules changed. MIError when the event is
        unknown, needs no authorization, or the user has no rules document (as OpenSIPS answers)."""
        if self.service is None:
            raise MIError(LIBRARY_MODE)
        ev = self.registry.contains_event(event)
        if ev is None:
            raise MIError(f"unknown event '{event}'")
        if not ev.req_auth or ev.get_rules_doc is None:
            raise MIError(f"event '{event}' has no authorization rules")
        uri = _pres_uri(pres_uri)
        from .storage import split_pres_uri

        user, domain = split_pres_uri(uri)
        rules = await _maybe_await(ev.get_rules_doc(user, domain))
        if rules is None:
            raise MIError(f"no rules document for {uri}")
        await self.service.update_watchers_status(uri, ev, rules)

    # --- worker processes (docs/workers.md section 3) -------------------------------------------
    def run_as_worker(self, identity: WorkerIdentity) -> None:
        """Before start(), in a worker process: this worker is a node of the cluster model on the shared
        database (sharing tag w<slot>, or <cluster_sharing_tag>.w<slot>), its supervisor the
        membership authority. Not called: one process, as without workers. The core passes its own
        record of the slot (routescript.workers.node.WorkerPlace): its slot, n_total and epoch are
        copied into a WorkerIdentity, which checks them."""
        if self.service is not None:
            raise RuntimeError("run_as_worker must be called before the presence module starts")
        from .membership import WorkerIdentity as Identity

        identity = Identity(identity.slot, identity.n_total, identity.epoch)
        if self.cluster_config is not None:
            identity.node_id(cluster_tag=self.cluster_config.node_id)   # ClusterError when too long
        self.worker = identity

    def use_presentity_interest(self, interest: WatcherInterest) -> None:
        """Workers with worker_affinity "uri" (routescript/workers/interest.py): the shared count of which
        worker holds watchers of which presentity, so a change is announced only where it is needed.
        Not used with cluster_id: nodes on other machines count nothing here."""
        self.interest = interest

    async def adopt_worker(self, slot: int) -> int:
        """The supervisor's Adopt: worker `slot` is dead (or restarting too slowly); its subscriptions
        become this worker's and their watchers are sent the current state. Returns how many rows."""
        if self.cluster is None or self.worker is None:
            raise RuntimeError("adopt_worker in a process that is not a started presence worker")
        tag = self.cluster_config.node_id if self.cluster_config is not None else None
        return await self.cluster.take_over(self.worker.node_id(slot, tag))

    def resync(self) -> None:
        """The supervisor's Resync: announcements from other workers may have been lost; every
        presentity our watchers follow is read again (cluster_resync)."""
        if self.cluster is not None:
            self.cluster.request_resync()

    def _node_config(self) -> ClusterConfig | None:
        """The ClusterConfig this process runs with: cluster_id's, this worker's, or None (one server)."""
        if self.worker is None:
            return self.cluster_config  # type: ignore[no-any-return]
        from .cluster import worker_config

        return worker_config(self.worker, self.cluster_config)

    # --- lifetime ------------------------------------------------------------------------------
    def check(self) -> None:
        if self.param("max_expires_publish") == 0 or self.param("max_expires_subscribe") == 0:
            raise ConfigError("max_expires_publish/max_expires_subscribe must be above 0")
        if self.param("waiting_subs_daysno") > MAX_WAITING_SUBS_DAYSNO:
            # OpenSIPS takes the maximum instead, with a notice; scripts written for it must load.
            log.warning("presence: waiting_subs_daysno %d is above the maximum, %d days used",
                        self.param("waiting_subs_daysno"), MAX_WAITING_SUBS_DAYSNO)
            self.modparams["waiting_subs_daysno"] = MAX_WAITING_SUBS_DAYSNO
        self._check_server_address()
        self._check_cluster()

    def _check_server_address(self) -> None:
        """server_address is every subscription's active_watchers.local_contact (with ";transport=..."
        for TCP/TLS): one too long for the column would make every subscription fail to be stored."""
        from routescript.db.schema import SCHEMA

        address = self.param("server_address") or ""
        size = SCHEMA["active_watchers"].by_name["local_contact"].size or 0
        if len(address) + len(";transport=sctp") > size:
            raise ConfigError(f"server_address is {len(address)} characters: with \";transport=...\" it must "
                              f"fit active_watchers.local_contact ({size})")

    def _check_cluster(self) -> None:
        from .cluster import ClusterError, config_from_params

        try:
            self.cluster_config = config_from_params(self.modparams)
        except ClusterError as exc:
            raise ConfigError(f"presence clustering: {exc}") from None
        if self.cluster_config is None:
            return
        url = self.param("db_url") or ""
        if not url.lower().startswith(("postgres://", "postgresql://", "mysql://")):
            # The nodes announce changes with PostgreSQL LISTEN/NOTIFY or a polled MySQL table
            # (routescript.db.mysql_feed); SQLite has no way to tell another machine, so a "cluster" on it
            # would silently miss every change.
            raise ConfigError("presence clustering (cluster_id) needs a PostgreSQL or MySQL db_url "
                              "(postgres://user:pass@host:port/db, mysql://user:pass@host/db): the nodes "
                              "talk through the database's change feed")
        if not self.param("fallback2db"):
            log.info("presence: cluster_id set, so fallback2db = 1")
            self.modparams["fallback2db"] = 1

    def settings(self) -> PresenceSettings:
        return PresenceSettings(
            max_expires_publish=self.param("max_expires_publish"),
            max_expires_subscribe=self.param("max_expires_subscribe"),
            expires_offset=self.param("expires_offset"), server_address=self.param("server_address") or "",
            notify_offline_body=bool(self.param("notify_offline_body")),
            mix_dialog_presence=bool(self.param("mix_dialog_presence")),
            end_sub_on_timeout=bool(self.param("end_sub_on_timeout")),
            fallback2db=bool(self.param("fallback2db")),
            enable_sphere_check=bool(self.param("enable_sphere_check")),
            waiting_subs_daysno=self.param("waiting_subs_daysno"),
            max_aggregated_body_size=self.param("max_aggregated_body_size"),
            bla_presentity_spec=parse_pv_spec(spec) if (spec := self.param("bla_presentity_spec")) else None,
            max_subscriptions=self.param("max_subscriptions"),
            max_subscriptions_per_source=self.param("max_subscriptions_per_source"),
            max_presentities=self.param("max_presentities"),
            trusted_sources=NetworkList.parse(self.param("trusted_sources") or ""))

    async def start(self) -> None:
        url = self.param("db_url")
        if not url:
            return
        names = {"presentity": self.param("presentity_table"),
                 "active_watchers": self.param("active_watchers_table"),
                 "watchers": self.param("watchers_table")}
        if any(k != v for k, v in names.items()):
            from routescript.db import open_database
            db = self._own_db = await open_database(url, table_names=names)
        else:
            db = await self.server.database(url)
        await db.ensure_schema(["presentity", "active_watchers", "watchers"])
        cfg = self._node_config()
        store = PresenceStore(db, sharing_tag=cfg.node_id if cfg is not None else None)
        self.service = service = PresenceService(self.server, self.registry, self.settings(), store=store)
        if cfg is not None:
            from .cluster import ClusterNode
            from .membership import SupervisedMembership

            self.cluster = ClusterNode(
                db, cfg, on_presentity_changed=service.cluster_presentity_changed,
                # workers without cluster_id take a carried change as it comes (ClusterNode.announcement)
                on_presentity_state=service.cluster_presentity_state if cfg.cluster_id == 0 else None,
                on_subscriptions_adopted=service.cluster_adopt, on_resync=service.cluster_resync,
                on_ownership_lost=service.cluster_ownership_lost,
                on_subscription_moved=service.cluster_subscription_moved,
                # workers without cluster_id: the supervisor says who is dead, no rs_nodes
                membership=SupervisedMembership() if cfg.cluster_id == 0 else None)
            service.join_cluster(self.cluster, as_worker=self.worker is not None)
            if self.interest is not None and not cfg.cluster_id:
                service.count_interest(self.interest)
        self._statistics(service)
        npub, nsub = await service.load()
        log.info("presence: %d publications and %d subscriptions loaded; events: %s", npub, nsub,
                 self.registry.get_event_list())
        if self.cluster is not None and cfg is not None:
            await self.cluster.start()   # rs_nodes, join, LISTEN, claim untagged rows
            self.cluster.run()           # heartbeat and dead-node timer (none for supervised workers)
            if cfg.cluster_id or (self.worker is not None and self.worker.epoch > 0):
                # changes announced while we were down reached nobody here: the current state. Not at a
                # worker's first start (epoch 0): the whole server was down, as a lone server restarts.
                await service.cluster_rejoin()
            self._cluster_stats()
            if cfg.cluster_id:
                log.info("presence: cluster %d joined as node %s (ping %gs, node timeout %gs)",
                         cfg.cluster_id, cfg.node_id, cfg.ping_interval, cfg.node_timeout)
            else:
                log.info("presence: worker node %s started", cfg.node_id)
        self._every(self.param("clean_period"), self.service.clean)
        self._every(self.param("db_update_period"), self.service.sync_db)

    def _every(self, period: int, job: Any) -> None:
        if period <= 0:
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(period)
                try:
                    await job()
                except Exception:
                    log.exception("presence timer job failed")
        self._timers.append(asyncio.get_running_loop().create_task(loop()))

    def _statistics(self, service: PresenceService) -> None:
        """presence:* statistics (OpenSIPS's presence exports none; names say what they count)."""
        stats = self.server.statistics
        stats.register("presence", "published_presentities", func=lambda: len(service.presentities.keys()))
        stats.register("presence", "publications", func=lambda: len(service.presentities))
        stats.register("presence", "active_subscriptions", func=lambda: len(service.subscriptions))
        sender = service.sender
        stats.register("presence", "sent_notifies", func=lambda: sender.sent,
                       reset=lambda: setattr(sender, "sent", 0))
        stats.register("presence", "failed_notifies", func=lambda: sender.failed,
                       reset=lambda: setattr(sender, "failed", 0))
        refusals = service.refusals
        stats.register("presence", "refused_by_caps", func=lambda: refusals.total,
                       reset=lambda: setattr(refusals, "total", 0))
        stats.register("presence", "dropped_notifies", func=lambda: sender.dropped,
                       reset=lambda: setattr(sender, "dropped", 0))
        stats.register("presence", "notify_queues", func=sender.dialogs)
        stats.register("presence", "queued_notifies", func=sender.pending)
        self._publish_accepted = stats.register("presence", "accepted_publishes")
        self._publish_rejected = stats.register("presence", "rejected_publishes")

    def _cluster_stats(self) -> None:
        if self.cluster is None:
            return
        stats = self.server.statistics
        cs = self.cluster.stats
        counters: dict[str, Callable[[], int]] = {
            "announced": lambda: cs.announced, "received": lambda: cs.received,
            "adopted_rows": lambda: cs.adopted_rows, "takeovers": lambda: cs.takeovers,
            "resyncs": lambda: cs.resyncs, "ownership_lost": lambda: cs.ownership_lost,
            "heartbeat_failures": lambda: cs.heartbeat_failures}
        for name, read in counters.items():
            stats.register("presence", f"cluster_{name}", func=read)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._timers:
            task.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        self._timers.clear()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.service is not None:
            await self.service.sender.drain(timeout=2.0)
            await self.service.sync_db()
            await self.service.sender.close()
            if self.service.store is not None:
                await self.service.store.committer.drain()   # PUBLISHes still committing
        if self._own_db is not None:
            await self._own_db.close()

    # --- script functions ----------------------------------------------------------------------
    @script_function("handle_publish", Arg("str", "sender_uri", optional=True), routes=(REQUEST_ROUTE,))
    async def handle_publish(self, ctx: Any, sender_uri: str | None = None) -> int:
        if self.service is None:
            log.error("handle_publish: %s", LIBRARY_MODE)
            return -1
        rc = await self.service.handle_publish(ctx, sender_uri)
        counter = self._publish_accepted if rc > 0 else self._publish_rejected
        if counter is not None:
            counter.inc()
        return rc

    @script_function("handle_subscribe", Arg("any", "force_active", optional=True, fixup=_truthy),
                     Arg("any", "sharing_tag", optional=True, fixup=_no_sharing_tag), routes=(REQUEST_ROUTE,))
    async def handle_subscribe(self, ctx: Any, force_active: Any = None, sharing_tag: Any = None) -> int:
        # sharing_tag never arrives here: _no_sharing_tag refuses it (a literal at load time, a variable's
        # value when the call runs).
        if self.service is None:
            log.error("handle_subscribe: %s", LIBRARY_MODE)
            return -1
        # force_active: a literal arrives as the bool its fixup made at load time (no work per request)
        force = force_active if force_active is True or force_active is False else _truthy(force_active)
        return await self.service.handle_subscribe(ctx, force)
