"""The presence module's MI commands (OpenSIPS 3.4 presence.c mi_cmds, with the 4.x names as aliases).

    refreshWatchers / refresh_watchers / presence:refresh_watchers  presentity_uri event refresh_type
    cleanup / presence:cleanup
    pres_phtable_list / presence:phtable_list
    subs_phtable_list / presence:subs_phtable_list                   [from to]   (both or none)
    pres_expose / presence:expose                                     event [filter]
    pres_cluster_takeover / presence:cluster_takeover                 node_id     (clustering, ours)
    pres_cluster_nodes / presence:cluster_nodes                                   (clustering, ours)

`PresenceMI` is mixed into PresenceModule, so the commands are collected with the module's other
exports (routescript.core.module.mi_command). The record builders below are pure functions; the
command methods are the thin async layer over the running PresenceService.

The listings and pres_expose walk every row: they are marked `walks_rows` (at most the core parameter
mi_max_walks of them run at once, routescript.mi.registry) and hand the event loop back every
WALK_SLICE rows (routescript.mi.walk), so SIP keeps being answered while they run. pres_expose's
filter is matched by RE2 (google-re2), whose time is linear in the text: a filter such as `(.|.)*!`
cannot backtrack for seconds per row as Python's `re` does. RE2 refuses what it cannot run in linear
time (back-references, look-around): such a filter is answered 400 "Bad filter" with RE2's reason.

Output fields, their order and their JSON types are OpenSIPS's (mi_print_phtable_record,
mi_print_shtable_record; captures 09, 23 and 24). Error codes are OpenSIPS's where it returns one
(init_mi_error(404, "unknown event") ...); where OpenSIPS returns no reply at all (a NULL response),
we answer -32000 with a message saying what went wrong.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import re2

from routescript.core.module import MICommand, MIError, mi_command
from routescript.db import DatabaseError
from routescript.mi.walk import WALK_SLICE, in_slices, let_loop_run

from .events import EVENT_CODES, WINFO_TYPE, EventRegistry, PresenceEvent
from .presentity import Publication
from .storage import join_pres_uri, publication_from_row, split_pres_uri
from .subscription import Subscription

if TYPE_CHECKING:
    from .cluster import ClusterNode
    from routescript.core.host import ModuleHost
    from .service import PresenceService

log = logging.getLogger("routescript.presence")

E_PRESENCE_EXPOSED = "E_PRESENCE_EXPOSED"
MAX_WILDCARD = 255          # OpenSIPS copies from/to wildcards into 256-byte buffers
MAX_FILTER = 1024           # bound on a pres_expose regular expression
MAX_EXPOSED = 100_000       # bound on the events one pres_expose raises
EXPOSE_PAGE = 1000          # presentity rows pres_expose reads from the database at a time
FILTER_MAX_MEM = 8 << 20    # bytes RE2 may use to compile a pres_expose filter (its own default)


class Pattern(Protocol):
    """What pres_expose needs of a compiled filter (an re2 pattern)."""

    def search(self, text: str) -> object: ...


def compile_filter(text: str) -> Pattern:
    """pres_expose's filter as an RE2 pattern, case-insensitive as MySQL's REGEXP (OpenSIPS's usual back
    end) and script regexes; MIError(400) with RE2's reason when it cannot be compiled."""
    if len(text) > MAX_FILTER:
        raise MIError("Filter too long", 400)
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.never_capture = True
    options.max_mem = FILTER_MAX_MEM
    try:
        return re2.compile(text, options)  # type: ignore[no-any-return]
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise MIError(f"Bad filter: {reason}", 400) from None
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"   # subs_phtable_list "expires", local time (strftime in OpenSIPS)


def _recipes(*recipes: tuple[str, ...]) -> Callable[[Any], Any]:
    """Exact parameter sets of a command (OpenSIPS mi recipes; see routescript.mi.registry)."""
    def tag(method: Any) -> Any:
        method._rs_mi_recipes = recipes
        return method
    return tag


# --------------------------------------------------------------------------- records (pure)

def etag_count(pub: Publication) -> int:
    """How many etags the publication has had, this one included (OpenSIPS pres_entry_t.etag_count).

    Our etags end in the generation like OpenSIPS's (`a.<time>.<nonce>.<counter>.<generation>`); a
    publication read back from the database knows its generation only from that text.
    """
    tail = pub.etag.rsplit(".", 1)[-1]
    from_text = int(tail) if tail.isdigit() and len(tail) < 10 else 0
    return max(pub.generation, from_text) + 1


def phtable_record(pub: Publication) -> dict[str, Any]:
    """One pres_phtable_list entry: pres_uri, event (OpenSIPS's numeric id), etag_count, etag.
    ("sphere" follows etag_count in OpenSIPS when enable_sphere_check found one; not built here.)"""
    return {"pres_uri": pub.pres_uri, "event": EVENT_CODES.get(pub.event, 0),
            "etag_count": etag_count(pub), "etag": pub.etag}


def next_hop(record_route: Iterable[str]) -> str | None:
    """The URI of the first route-set entry (subs_phtable_list "next_hop"), None without a route set."""
    from routescript.sip import ParseError, parse_name_addr

    for entry in record_route:
        try:
            return str(parse_name_addr(entry, "Record-Route").uri)
        except ParseError:
            # Stored by someone else in a shape we cannot read: show the text between <> as it is.
            text = entry.strip()
            return text[text.find("<") + 1:text.find(">")] if "<" in text and ">" in text else text
    return None


def local_time(when: float) -> str:
    return time.strftime(DATE_FORMAT, time.localtime(int(when)))


def shtable_record(sub: Subscription) -> dict[str, Any]:
    """One subs_phtable_list entry, fields in OpenSIPS's order (capture 09):
    pres_uri, event, expires, db_flag, version, to_user, to_domain, to_tag, from_user, from_domain,
    from_tag, contact, [next_hop], callid, local_cseq, remote_cseq."""
    rec: dict[str, Any] = {
        "pres_uri": sub.pres_uri, "event": sub.event, "expires": local_time(sub.expires_at),
        "db_flag": sub.db_flag, "version": sub.version,
        "to_user": sub.to_user, "to_domain": sub.to_domain, "to_tag": sub.to_tag,
        "from_user": sub.watcher_user, "from_domain": sub.watcher_domain, "from_tag": sub.from_tag,
        "contact": sub.contact,
    }
    hop = next_hop(sub.record_route)
    if hop is not None:
        rec["next_hop"] = hop
    rec.update({"callid": sub.callid, "local_cseq": sub.local_cseq, "remote_cseq": sub.remote_cseq})
    return rec


def from_to_match(sub: Subscription, from_w: str, to_w: str) -> bool:
    """OpenSIPS from_to_match_subs: fnmatch(3) (case-sensitive, `*` crosses `/`) of the wildcards
    against sip:from_user@from_domain and sip:to_user@to_domain."""
    return (fnmatch.fnmatchcase(join_pres_uri(sub.watcher_user, sub.watcher_domain), from_w)
            and fnmatch.fnmatchcase(join_pres_uri(sub.to_user, sub.to_domain), to_w))


def expose_matches(row: dict[str, Any], pattern: Pattern | None) -> bool:
    """pres_expose's filter. OpenSIPS puts `username REGEXP filter` in its query, while its docs show
    a filter on the URI (`^sip:10\\.0\\.5\\.`); choice: a row matches when the pattern is found in
    the username or in sip:user@domain, so filters written either way work."""
    if pattern is None:
        return True
    user = str(row.get("username") or "")
    return bool(pattern.search(user) or pattern.search(join_pres_uri(user, str(row.get("domain") or ""))))


def exposed_params(row: dict[str, Any], event: PresenceEvent) -> dict[str, Any]:
    """E_PRESENCE_EXPOSED parameters, the E_PRESENCE_PUBLISH set: user, domain, event, expires, etag,
    old_etag, body. As OpenSIPS's pres_expose_evi, `expires` is the stored (absolute, Unix time)
    expiry of the row and old_etag is empty."""
    body = row.get("body") or b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body).decode("utf-8", "replace")
    return {"user": str(row.get("username") or ""), "domain": str(row.get("domain") or ""),
            "event": event.name, "expires": int(row.get("expires") or 0), "etag": str(row.get("etag") or ""),
            "old_etag": "", "body": body}


def normalise_pres_uri(text: str) -> str:
    """A presentity URI as the tables key it (sip:user@host; port and parameters dropped).
    Raises MIError(400) for text that is not a SIP URI."""
    from routescript.sip import ParseError, parse_uri

    try:
        uri = parse_uri(text.strip().strip("<>"))
    except ParseError:
        raise MIError("Bad presentity URI", 400) from None
    return join_pres_uri(uri.user or "", uri.host)


# --------------------------------------------------------------------------- the commands

class PresenceMI:
    """MI commands of the presence module (a mixin for PresenceModule: uses `self.service`,
    `self.registry` (the EventRegistry), `self.server` and `self.param`)."""

    service: PresenceService | None
    registry: EventRegistry
    server: ModuleHost
    cluster: ClusterNode | None
    param: Callable[[str], Any]

    async def refresh_watchers_rules(self, pres_uri: str, event: str) -> None:
        raise NotImplementedError   # PresenceModule's (pres-rules changed: re-judge the watchers)

    def mi_commands(self) -> list[MICommand]:
        # OpenSIPS disables every presence MI command in library mode (no db_url).
        if not self.param("db_url"):
            return []
        return super().mi_commands()  # type: ignore[misc, no-any-return]

    def _running(self) -> PresenceService:
        if self.service is None:
            raise MIError("presence is not running")
        return self.service

    def _event(self, name: str, *, empty: tuple[str, int], unknown: tuple[str, int]) -> PresenceEvent:
        if not name or not name.strip():
            raise MIError(*empty)
        event = self.registry.contains_event(name.strip())
        if event is None:
            raise MIError(*unknown)
        return event

    # ---------------------------------------------------------------- refreshWatchers
    @mi_command("refreshWatchers", workers="one", aliases=("refresh_watchers", "presence:refresh_watchers"),
                doc="sends NOTIFYs to the watchers of a presentity after a change of its authorization "
                    "rules (refresh_type 0) or of its published state in the database (otherwise)")
    async def mi_refresh_watchers(self, presentity_uri: str, event: str, refresh_type: int) -> None:
        service = self._running()
        if not presentity_uri or not presentity_uri.strip():
            raise MIError("Empty presentity URI", 404)
        ev = self._event(event, empty=("Empty event parameter", 400),
                         unknown=("Wrong event parameter", -32000))
        pres_uri = normalise_pres_uri(presentity_uri)
        if refresh_type == 0:
            await self._refresh_rules(pres_uri, ev)
        else:
            await self._refresh_published(service, pres_uri, ev)

    async def _refresh_rules(self, pres_uri: str, ev: PresenceEvent) -> None:
        if ev.get_rules_doc is None:
            raise MIError(f"event {ev.name} does not require authorization")
        await self.refresh_watchers_rules(pres_uri, ev.name)

    async def _refresh_published(self, service: PresenceService, pres_uri: str, ev: PresenceEvent) -> None:
        """OpenSIPS query_db_notify: the state is read again from the database and every watcher of
        the presentity gets a NOTIFY with it. A presentity nobody watches: nothing sent, "OK"."""
        if ev.type == WINFO_TYPE:
            peer = self.registry.wipeer(ev)
            if peer is not None:
                async with service.locks.hold(pres_uri):
                    await service.notify_winfo(pres_uri, peer)
            return
        async with service.locks.hold(pres_uri):
            await self._reload_publications(service, pres_uri, ev)
            sent = await service.notify_presentity(pres_uri, ev)
        log.info("refresh_watchers %s %s: %d NOTIFYs", pres_uri, ev.name, sent)

    @staticmethod
    async def _reload_publications(service: PresenceService, pres_uri: str, ev: PresenceEvent) -> None:
        if service.store is None:
            return
        try:
            rows = await service.store.find_publications(pres_uri, ev.name,
                                                         service.clock() - service.settings.expires_offset)
        except DatabaseError as exc:
            raise MIError(f"reading the publications of {pres_uri} failed: {exc}") from None
        table = service.presentities
        held = {p.etag: p for p in table.publications(pres_uri, ev.name)}
        fresh = []
        for row in rows:
            pub = publication_from_row(row, ev.content_type)
            old = held.get(pub.etag)
            if old is not None:  # keep what only memory knows (generation, content type)
                pub = replace(old, body=pub.body, expires_at=pub.expires_at, received_time=pub.received_time,
                              sender=pub.sender)
            fresh.append(pub)
        # replace_presentity keeps a held publication whose etag it is given; the database is the
        # truth here (a body changed in place keeps its etag), so the held ones go first.
        table.replace_presentity(pres_uri, ev.name, [])
        table.replace_presentity(pres_uri, ev.name, fresh)

    # ---------------------------------------------------------------- cleanup
    @mi_command("cleanup", workers="each", aliases=("presence:cleanup",),
                doc="runs the expiry of publications and subscriptions now (the clean_period job)")
    async def mi_cleanup(self) -> None:
        service = self._running()
        await service.clean()      # expired publications and subscriptions: NOTIFYs, rows deleted
        await service.sync_db()    # the table in memory and active_watchers agree again
        if service.store is not None:
            # Rows nobody holds in memory (another server's, edited by hand), as OpenSIPS's
            # msg_presentity_clean reads them from the database. One second of margin: the stored
            # expires is the granted time truncated to an integer.
            cutoff = service.clock() - service.settings.expires_offset - 1
            try:
                await service.store.delete_expired(cutoff)
            except DatabaseError as exc:
                raise MIError(f"deleting expired rows failed: {exc}") from None

    # ---------------------------------------------------------------- pres_phtable_list
    @mi_command("pres_phtable_list", workers="concat", key=("pres_uri", "event", "etag"),
                aliases=("presence:phtable_list",), walks_rows=True,
                doc="lists all the presentity records")
    async def mi_pres_phtable_list(self) -> list[dict[str, Any]]:
        service = self._running()
        pubs = sorted(service.presentities,
                      key=lambda p: (p.pres_uri, EVENT_CODES.get(p.event, 0), p.received_time))
        out: list[dict[str, Any]] = []
        async for batch in in_slices(pubs):
            out.extend(phtable_record(p) for p in batch)
        return out

    # ---------------------------------------------------------------- subs_phtable_list
    @mi_command("subs_phtable_list", workers="concat", key=("callid", "to_tag", "from_tag"),
                aliases=("presence:subs_phtable_list",), optional=("from_", "to"),
                walks_rows=True, doc="lists all the subscription records, or those whose From and To URIs "
                                     "match the given wildcards")
    @_recipes((), ("from", "to"))
    async def mi_subs_phtable_list(self, from_: str | None = None,
                                   to: str | None = None) -> list[dict[str, Any]]:
        service = self._running()
        if from_ is not None and (len(from_) > MAX_WILDCARD or len(to or "") > MAX_WILDCARD):
            raise MIError("Wildcard too long", 400)
        subs = sorted(service.subscriptions, key=lambda s: (s.pres_uri, s.event))   # stable: oldest first
        out: list[dict[str, Any]] = []
        async for batch in in_slices(subs):
            out.extend(shtable_record(s) for s in batch
                       if from_ is None or from_to_match(s, from_, to or ""))
        return out

    # ---------------------------------------------------------------- clustering (docs/cluster.md)
    def _cluster(self) -> ClusterNode:
        self._running()
        cluster = self.cluster
        if cluster is None:
            raise MIError("presence clustering is not enabled (modparam cluster_id)", 400)
        return cluster

    @mi_command("pres_cluster_takeover", workers="one", aliases=("presence:cluster_takeover",),
                doc="adopts now every subscription of the node with that sharing tag (a dead node, or one "
                    "being retired); returns how many subscriptions were adopted")
    async def mi_cluster_takeover(self, node_id: str) -> dict[str, Any]:
        from .cluster import ClusterError

        cluster = self._cluster()
        try:
            adopted = await cluster.take_over(str(node_id).strip())
        except ClusterError as exc:
            raise MIError(str(exc), 400) from None
        except DatabaseError as exc:
            raise MIError(f"takeover of {node_id} failed: {exc.message}", 500) from None
        return {"node_id": str(node_id).strip(), "adopted": adopted}

    @mi_command("pres_cluster_nodes", workers="one", aliases=("presence:cluster_nodes",),
                doc="lists the nodes of this presence cluster (the rs_nodes rows) and this node's counters")
    async def mi_cluster_nodes(self) -> dict[str, Any]:
        cluster = self._cluster()
        try:
            rows = await cluster.nodes()
        except DatabaseError as exc:
            raise MIError(f"reading rs_nodes failed: {exc.message}", 500) from None
        nodes = [{"node_id": r["node_id"], "state": r["state"], "last_seen": int(r["last_seen"] or 0),
                  "started": int(r["started"] or 0), "adopted_by": r["adopted_by"]} for r in rows]
        st = cluster.stats
        return {"cluster_id": cluster.config.cluster_id, "node_id": cluster.node_id,
                "owns_subscriptions": cluster.owns_subscriptions(), "nodes": nodes,
                "stats": {"announced": st.announced, "received": st.received, "adopted_rows": st.adopted_rows,
                          "takeovers": st.takeovers, "resyncs": st.resyncs}}

    # ---------------------------------------------------------------- pres_expose
    @mi_command("pres_expose", workers="each",
                aliases=("presence:expose",), optional=("filter",), walks_rows=True,
                doc="raises E_PRESENCE_EXPOSED for every stored publication of an event (matching filter)")
    async def mi_pres_expose(self, event: str, filter: str | None = None) -> None:
        service = self._running()
        ev = self._event(event, empty=("Invalid event", 404), unknown=("unknown event", 404))
        pattern = compile_filter(filter) if filter is not None else None
        bus = self.server.events
        raised = 0
        async with aclosing(self._expose_rows(service, ev)) as slices:
            async for rows in slices:
                matching = [row for row in rows if expose_matches(row, pattern)]
                full = len(matching) > MAX_EXPOSED - raised
                for row in matching[:MAX_EXPOSED - raised]:
                    raised += 1
                    if bus is not None:
                        # Awaited one by one: when the reply says OK, every event_route has run.
                        await bus.raise_event(E_PRESENCE_EXPOSED, exposed_params(row, ev))
                if full:
                    log.warning("pres_expose %s: stopped after %d events", ev.name, MAX_EXPOSED)
                    break
                await let_loop_run()
        log.info("pres_expose %s%s: %d presentities exposed", ev.name,
                 f" (filter {filter!r})" if filter is not None else "", raised)

    @staticmethod
    async def _expose_rows(service: PresenceService,
                           ev: PresenceEvent) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Live rows of the event, WALK_SLICE at a time: from the database as OpenSIPS reads them (other
        servers' too), EXPOSE_PAGE rows per query; from memory when the service has no store."""
        now = service.clock()
        if service.store is None:
            pubs = [p for p in service.presentities if p.event == ev.name and p.expires_at > now]
            for start in range(0, len(pubs), WALK_SLICE):
                rows = []
                for pub in pubs[start:start + WALK_SLICE]:
                    user, domain = split_pres_uri(pub.pres_uri)
                    rows.append({"username": user, "domain": domain, "etag": pub.etag,
                                 "expires": int(pub.expires_at), "body": pub.body})
                yield rows
            return
        after_id = 0
        while True:
            try:
                page = await service.store.live_publications_page(now, ev.name, after_id, EXPOSE_PAGE)
            except DatabaseError as exc:
                raise MIError(f"reading the presentity table failed: {exc}") from None
            for start in range(0, len(page), WALK_SLICE):
                yield page[start:start + WALK_SLICE]
            if len(page) < EXPOSE_PAGE:
                return
            after_id = int(page[-1]["id"])
