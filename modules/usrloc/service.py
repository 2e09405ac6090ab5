"""The location service with its storage (db_mode) and, with worker processes, its replicas.

db_mode (OpenSIPS 3.4):
    0  memory only;
    1  write-through: a change is in the database before the caller goes on (before save()'s 200);
    2  write-back: changes kept in memory and written every `timer_interval` and at shutdown;
    3  database only: every read and write goes to the table, nothing kept in memory.
Modes 1 and 2 load the table back at start (each domain on its first use).

Worker processes (docs/workers.md, "usrloc with N workers"): every worker keeps a full replica of the
bindings (modes 0-2). The worker that changes a binding applies it, writes it (mode 1: committed), then
announces the change itself (the whole binding, a few hundred bytes) to every other worker through the
worker change feed (the inboxes: `LocalHub` under the key USRLOC_FEED_KEY, relayed by core's
FeedRelay). The announcement is in the other workers' inboxes before save() sends its 200, and a worker
reads its inbox before any message it reads itself, so a lookup() anywhere after the 200 sees the
binding. Mode 3 needs no replica: every worker reads the table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from routescript.db import Database, DatabaseError, GroupCommitter, Write
from routescript.db.feed import MAX_PAYLOAD, Listeners, LocalHub

from .core import MAX_DOMAINS, Change, Contact, Domain

log = logging.getLogger("routescript.usrloc")

USRLOC_FEED_KEY = "routescript-usrloc-replicas"
CHANNEL = "usrloc"
MAX_EARLY = 100_000   # announcements kept for a domain not loaded yet


class UsrlocError(Exception):
    """The storage failed: `transient` (the database is unreachable: 503) or not (500)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class LocationService:
    """Domains, storage and replicas. `open_db(domain_name)` gives the Database whose `location` table
    is that domain's (None in mode 0). `clock` gives unix seconds."""

    def __init__(self, *, db_mode: int, open_db: Callable[[str], Any] | None, use_domain: bool,
                 case_sensitive: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.db_mode = db_mode
        self.open_db = open_db
        self.use_domain = use_domain
        self.case_sensitive = case_sensitive
        self.clock = clock
        self.domains: dict[str, Domain] = {}
        self._dbs: dict[str, Database] = {}
        # one group commit per database: the REGISTERs ready in one loop turn share a commit (measured:
        # a transaction per REGISTER capped db_mode 1 at the disk's sync rate)
        self._committers: dict[int, GroupCommitter] = {}
        self._loading: dict[str, asyncio.Future[Domain]] = {}
        self._dirty: dict[tuple[str, int], Change] = {}   # mode 2: the last change of each binding
        self._early: dict[str, list[Change]] = {}   # announced for a domain not loaded here yet
        self._origin = f"{os.getpid()}.{os.urandom(4).hex()}"
        self._listeners: Listeners | None = None
        self.worker_slot: int | None = None
        self.committed: list[Callable[[list[Change]], None]] = []   # OpenSIPS ul_register_ulcb
        self.announced = 0
        self.applied_remote = 0

    # --- domains -----------------------------------------------------------------------------------
    async def domain(self, name: str) -> Domain:
        """The domain `name` (made, and in modes 1-2 loaded from its table, on first use)."""
        dom = self.domains.get(name)
        if dom is not None:
            return dom
        if len(self.domains) >= MAX_DOMAINS:
            raise UsrlocError(f"usrloc: more than {MAX_DOMAINS} domains (tables); '{name}' refused")
        pending = self._loading.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Domain] = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        try:
            dom = Domain(name, case_sensitive=self.case_sensitive)
            if self.db_mode in (1, 2):
                rows = await (await self._db(name)).query("location")
                now = self.clock()
                for row in rows:
                    contact = Contact.from_row(row)
                    if contact.alive(now):
                        dom.apply(Change("put", name, self.aor_of(contact), contact))
                log.info("usrloc: domain '%s': %d contacts loaded", name, dom.contact_count())
            elif self.db_mode == 3:
                await self._db(name)
            # announcements that arrived before (or while) the table was read, replayed in order
            for change in self._early.pop(name, ()):
                dom.apply(change)
            self.domains[name] = dom
            future.set_result(dom)
            return dom
        except DatabaseError as exc:
            future.set_exception(UsrlocError(f"usrloc: cannot load domain '{name}': {exc}", exc.transient))
            future.exception()
            raise UsrlocError(f"usrloc: cannot load domain '{name}': {exc}", exc.transient) from exc
        finally:
            del self._loading[name]

    async def _db(self, name: str) -> Database:
        db = self._dbs.get(name)
        if db is None:
            assert self.open_db is not None
            db = self._dbs[name] = await self.open_db(name)
            await db.ensure_schema(["location"])
        return db

    def aor_of(self, c: Contact) -> str:
        return f"{c.username}@{c.domain}" if self.use_domain and c.domain else c.username

    # --- reads -------------------------------------------------------------------------------------
    async def contacts(self, domain: str, aor: str) -> list[Contact]:
        """Every live contact of `aor` (insertion order)."""
        now = self.clock()
        if self.db_mode == 3:
            return [c for c in await self._read_aor(domain, aor) if c.alive(now)]
        return (await self.domain(domain)).live(aor, now)

    async def _read_aor(self, domain: str, aor: str) -> list[Contact]:
        from .core import aor_parts
        user, dom = aor_parts(aor, self.use_domain)
        where: dict[str, Any] = {"username": user}
        if self.use_domain:
            where["domain"] = dom
        try:
            rows = await (await self._db(domain)).query("location", where, order_by="last_modified")
        except DatabaseError as exc:
            raise UsrlocError(f"usrloc: reading {aor}: {exc}", exc.transient) from exc
        out = [Contact.from_row(r) for r in rows]
        if not self.case_sensitive:
            return out
        return [c for c in out if self.aor_of(c) == aor]

    # --- writes ------------------------------------------------------------------------------------
    async def commit(self, changes: list[Change]) -> None:
        """Store `changes` (all of one AoR, as save() makes them) by the db_mode, then announce them.
        UsrlocError when the database refused them (nothing applied in memory then)."""
        if not changes:
            return
        if self.db_mode in (1, 3):
            await self._write(changes[0].domain, changes)
        if self.db_mode != 3:
            dom = await self.domain(changes[0].domain)
            for change in changes:
                dom.apply(change)
                if self.db_mode == 2:
                    self._dirty[(change.domain, change.contact.contact_id)] = change
            self._announce(changes)
        self._tell_committed(changes)

    def _tell_committed(self, changes: list[Change]) -> None:
        """The callbacks (pua_bla's) told of bindings this process stored or removed - not of replicas
        from other workers, nor of expiries (OpenSIPS's UL_CONTACT_INSERT/UPDATE/DELETE, raised where the
        change is made). A failing callback is logged; the REGISTER has been stored anyway."""
        for callback in self.committed:
            try:
                callback(changes)
            except Exception:
                log.exception("usrloc: a contact callback failed for %s", changes[0].aor)

    async def _write(self, domain: str, changes: Iterable[Change]) -> None:
        """The changes committed (with those of the other callers ready now: routescript.db.group)."""
        writes = [Write("upsert", "location", change.contact.to_row(), keys=("contact_id",))
                  if change.kind == "put" else
                  Write("delete", "location", where={"contact_id": change.contact.contact_id})
                  for change in changes]
        try:
            db = await self._db(domain)
            committer = self._committers.get(id(db))
            if committer is None:
                committer = self._committers[id(db)] = GroupCommitter(db)
            await committer.write(writes)
        except DatabaseError as exc:
            raise UsrlocError(f"usrloc: writing {domain}: {exc}", exc.transient) from exc

    async def drain(self) -> None:
        """Every write queued for a group commit committed (or failed): before the databases close."""
        for committer in self._committers.values():
            await committer.drain()

    async def flush(self) -> int:
        """Mode 2: write every change not yet written (timer, ul_flush, shutdown). The count written."""
        if not self._dirty:
            return 0
        pending, self._dirty = self._dirty, {}
        by_domain: dict[str, list[Change]] = {}
        for change in pending.values():
            by_domain.setdefault(change.domain, []).append(change)
        written = 0
        domains = list(by_domain.items())
        for i, (name, changes) in enumerate(domains):
            try:
                await self._write(name, changes)
                written += len(changes)
            except asyncio.CancelledError:
                # the stop cancels the timer, maybe mid-write: the rest goes back for the final flush
                for _name, rest in domains[i:]:
                    self._keep(rest)
                raise
            except UsrlocError as exc:
                log.error("usrloc: write-back of %d changes to '%s' failed, kept for the next timer: %s",
                          len(changes), name, exc)
                self._keep(changes)
        return written

    def _keep(self, changes: Iterable[Change]) -> None:
        """Changes a write-back could not write, back among the dirty ones (a newer change wins)."""
        for c in changes:
            self._dirty.setdefault((c.domain, c.contact.contact_id), c)

    def is_dirty(self, contact_id: int) -> bool:
        return any(key[1] == contact_id for key in self._dirty)

    async def expire(self, *, write_db: bool) -> int:
        """The timer: drop expired contacts from memory; `write_db` (one process, or worker 0) also
        deletes the expired rows from the tables. The number dropped from memory."""
        now = self.clock()
        dropped = 0
        for dom in list(self.domains.values()):
            expired = dom.expired(now)
            for change in expired:
                dom.apply(change)
                self._dirty.pop((change.domain, change.contact.contact_id), None)
            dropped += len(expired)
        if write_db and self.db_mode in (1, 2, 3):
            for name, db in list(self._dbs.items()):
                try:
                    await _delete_expired(db, int(now))
                except DatabaseError as exc:
                    log.error("usrloc: deleting expired contacts of '%s' failed: %s", name, exc)
        return dropped

    async def rm_aor(self, domain: str, aor: str) -> int:
        contacts = (await self._read_aor(domain, aor)) if self.db_mode == 3 else \
            list((await self.domain(domain)).get(aor))
        await self.commit([Change("delete", domain, aor, c) for c in contacts])
        return len(contacts)

    # --- replicas between workers ------------------------------------------------------------------
    def run_as_worker(self, slot: int) -> None:
        self.worker_slot = slot
        if self.db_mode == 3:
            return   # every worker reads the table
        listeners = self._listeners = Listeners(USRLOC_FEED_KEY)
        listeners.add(CHANNEL, self._on_announce, None)
        LocalHub.join(USRLOC_FEED_KEY, listeners)

    def close(self) -> None:
        if self._listeners is not None:
            LocalHub.leave_key(USRLOC_FEED_KEY, self._listeners)
            self._listeners = None

    def _announce(self, changes: list[Change]) -> None:
        if self._listeners is None:
            return
        for change in changes:
            payload = json.dumps({"o": self._origin, "k": change.kind, "d": change.domain, "a": change.aor,
                                  "c": change.contact.to_wire()}, separators=(",", ":"))
            if len(payload.encode()) > MAX_PAYLOAD:   # cannot happen within core.py's bounds
                log.error("usrloc: announcement for %s too large (%d bytes): not replicated",
                          change.aor, len(payload))
                continue
            LocalHub.publish_to(USRLOC_FEED_KEY, CHANNEL, payload)
            self.announced += 1

    def _on_announce(self, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
            if data.get("o") == self._origin:
                return
            change = Change(data["k"], data["d"], data["a"], Contact.from_wire(data["c"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("usrloc: bad announcement from another worker ignored: %s", exc)
            return
        dom = self.domains.get(change.domain)
        if dom is None:
            # a domain this worker has not used (loaded) yet: replayed after its load
            early = self._early.setdefault(change.domain, [])
            if len(early) >= MAX_EARLY:
                log.error("usrloc: %d announcements for unloaded domain '%s': one dropped",
                          len(early), change.domain)
                return
            early.append(change)
            return
        dom.apply(change)
        self.applied_remote += 1

    async def resync(self) -> None:
        """Announcements may have been lost (a worker died): modes 1 reads every loaded domain again.
        Modes 0 and 2 have nothing to read back (the bindings of a dead worker's memory are lost)."""
        if self.db_mode != 1:
            log.warning("usrloc: db_mode %d: announcements from a dead worker may be lost; "
                        "bindings re-appear at their next REGISTER", self.db_mode)
            return
        for name in list(self.domains):
            db = await self._db(name)
            rows = await db.query("location")
            dom = Domain(name, case_sensitive=self.case_sensitive)
            for row in rows:
                c = Contact.from_row(row)
                dom.apply(Change("put", name, self.aor_of(c), c))
            self.domains[name] = dom


async def _delete_expired(db: Database, now: int) -> None:
    """Delete the rows whose time is over; expires 0 is a permanent contact (ul_add) and stays."""
    rows = await db.query("location", {"expires": ("<", now)}, columns=["contact_id", "expires"])
    ids = [r["contact_id"] for r in rows if r["expires"] != 0]
    for start in range(0, len(ids), 1000):
        await db.delete("location", {"contact_id": ("in", ids[start:start + 1000])})
