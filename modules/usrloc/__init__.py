"""usrloc - the user location service (OpenSIPS 3.4 usrloc). docs/modules/usrloc.md lists every parameter
and MI command with where we differ.

The registrar (modules/registrar) reaches it through `bind_usrloc(server)` -> UsrlocModule and its
`service` (modules/usrloc/service.py: LocationService); the bindings themselves are the sans-IO
modules/usrloc/core.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from routescript.core.module import MIError, Module, Param, mi_command
from routescript.db.url import check_db_url
from routescript.mi.walk import in_slices

from .core import MAX_CONTACT_URI, Change, Contact, aor_parts, new_contact_id
from .service import LocationService, UsrlocError

__all__ = ["MODULE", "Change", "Contact", "LocationService", "UsrlocError", "UsrlocModule", "bind_usrloc"]

log = logging.getLogger("routescript.usrloc")

_CLUSTER = ("usrloc clustering (OpenSIPS's location_cluster/clusterer) is not built: with worker "
            "processes every worker keeps a full replica (docs/workers.md); between machines share a "
            "PostgreSQL table with db_mode 3")
_COLUMN = "the location table keeps OpenSIPS's default column names"
MI_UL_CALLID = "dfjrewr12386fd6-343@opensips.mi"    # what OpenSIPS's ul_add writes as Call-ID
MI_UL_UA = "OpenSIPS MI Server"


def _mode(value: int) -> None:
    if value not in (0, 1, 2, 3):
        raise ValueError("db_mode is 0 (memory), 1 (write-through), 2 (write-back) or 3 (DB only)")


def _bool(value: int) -> None:
    if value not in (0, 1):
        raise ValueError("must be 0 or 1")


def _positive(value: int) -> None:
    if value <= 0:
        raise ValueError("must be above 0")


def _matching(value: int) -> None:
    if value not in (0, 1):
        raise ValueError("matching_mode is 0 (contact) or 1 (contact and Call-ID)")


def bind_usrloc(server: Any) -> UsrlocModule | None:
    module = server.modules.get("usrloc")
    return module if isinstance(module, UsrlocModule) else None


class UsrlocModule(Module):
    name = "usrloc"
    db_url_from_default = "db_url"   # OpenSIPS: init_db_url(db_url, ...)
    params = (
        Param("db_url", str, "", "database URL (db_mode 1-3)", check=check_db_url),
        Param("db_mode", int, 0, "0 memory, 1 write-through, 2 write-back, 3 DB only", check=_mode),
        Param("timer_interval", int, 60, "seconds between expiry runs (and write-backs in db_mode 2)",
              check=_positive),
        Param("use_domain", int, 0, "AoRs are user@domain (else the user part only)", check=_bool),
        Param("matching_mode", int, 0, "0: a binding is matched by its Contact URI; 1: by URI and Call-ID",
              check=_matching),
        Param("cseq_delay", int, 20, "a REGISTER with the same Call-ID and CSeq within this many seconds "
              "is a retransmission (answered, nothing changed)"),
        Param("nat_bflag", str, "", "branch flag marking contacts behind NAT (stored with the binding, "
              "set again on the branch by lookup)"),
        Param("hash_size", int, 9, "accepted for compatibility (a Python dict needs no table size)"),
        Param("desc_time_order", int, 0, "accepted: lookup() orders by q, then newest first, either way",
              check=_bool),
        Param("max_contact_delete", int, 10, "accepted: expired rows are deleted in batches of 1000"),
        Param("working_mode_preset", str, "", later="use db_mode (working_mode_preset names cluster setups)"),
        Param("cluster_mode", str, "", later=_CLUSTER),
        Param("restart_persistency", str, "", later=_CLUSTER),
        Param("sql_write_mode", str, "", later=_CLUSTER),
        Param("location_cluster", int, 0, later=_CLUSTER),
        Param("skip_replicated_db_ops", int, 0, later=_CLUSTER),
        Param("pinging_mode", str, "", later="NAT pinging (nathelper) is not built"),
        Param("latency_event_min_us", int, 0, later="the E_UL_LATENCY_UPDATE event is not built"),
        Param("latency_event_min_us_delta", int, 0, later="the E_UL_LATENCY_UPDATE event is not built"),
        Param("regen_broken_contactid", int, 0, later="contact ids are always ours: nothing to regenerate"),
        Param("db_update_as_insert", int, 0, later="updates are upserts by contact_id already"),
        *(Param(f"{col}_column", str, col, later=_COLUMN) for col in (
            "contact_id", "user", "domain", "contact", "expires", "q", "callid", "cseq", "flags", "cflags",
            "user_agent", "received", "path", "socket", "methods", "last_mod", "sip_instance", "kv_store",
            "attr")),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.service: LocationService | None = None
        self.worker_slot: int | None = None
        self._timer: asyncio.Task[None] | None = None
        self.nat_bflag = 0
        self._callbacks: list[Callable[[list[Change]], None]] = []

    def register_ulcb(self, callback: Callable[[list[Change]], None]) -> None:
        """OpenSIPS ul_register_ulcb (insert, update, delete): `callback` is told of every change save()
        or an MI command commits in this process, after it is stored."""
        self._callbacks.append(callback)
        if self.service is not None:
            self.service.committed.append(callback)

    def check(self) -> None:
        from routescript.core.module import ConfigError

        mode = self.param("db_mode")
        if mode and not self.param("db_url"):
            raise ConfigError(f"usrloc: db_mode {mode} needs modparam(\"usrloc\", \"db_url\", ...)")
        flag = self.param("nat_bflag")
        if flag:
            registry = self.server.registry
            names = getattr(registry, "branch_flags", None) if registry is not None else None
            try:
                self.nat_bflag = names.mask(flag) if names is not None else 1 << int(flag)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"usrloc: nat_bflag {flag!r}: {exc}") from None

    def make_service(self, clock: Any = time.time) -> LocationService:
        url = self.param("db_url")

        async def open_db(domain: str) -> Any:
            if domain == "location":
                return await self.server.database(url)
            from routescript.db import open_database
            db = await open_database(url, table_names={"location": domain})
            self._own_dbs.append(db)
            return db

        self._own_dbs: list[Any] = []
        return LocationService(db_mode=self.param("db_mode"), open_db=open_db if url else None,
                               use_domain=bool(self.param("use_domain")), clock=clock)

    # --- lifecycle ---------------------------------------------------------------------------------
    def run_as_worker(self, identity: Any) -> None:
        """Before start(), in a worker process (routescript.workers.node): replicas over the feed."""
        self.worker_slot = identity.slot

    async def adopt_worker(self, slot: int) -> int:
        return 0    # every worker holds every binding: nothing is owned per worker

    def resync(self) -> None:
        if self.service is not None:
            task = asyncio.get_running_loop().create_task(self.service.resync())
            task.add_done_callback(_log_failure)

    async def start(self) -> None:
        service = self.service = self.make_service()
        service.committed.extend(self._callbacks)
        if self.worker_slot is not None:
            service.run_as_worker(self.worker_slot)
        if service.db_mode in (1, 2):
            await service.domain("location")    # the usual table loaded before the first message
        self._statistics(service)
        self._timer = asyncio.get_running_loop().create_task(self._timer_loop())

    async def _timer_loop(self) -> None:
        period = self.param("timer_interval")
        while True:
            await asyncio.sleep(period)
            await self.timer_tick()

    async def timer_tick(self) -> None:
        service = self.service
        if service is None:
            return
        try:
            await service.flush()
            dropped = await service.expire(write_db=self.worker_slot in (None, 0))
            if dropped:
                self.expired_stat.inc(dropped)
        except Exception:
            log.exception("usrloc: timer failed")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        if self.service is not None:
            await self.service.flush()
            await self.service.drain()
            self.service.close()
        for db in getattr(self, "_own_dbs", ()):
            await db.close()

    def _statistics(self, service: LocationService) -> None:
        stats = self.server.statistics

        def users() -> int:
            return sum(len(d.records) for d in service.domains.values())
        stats.register("usrloc", "registered_users", func=users)
        dom = "location"
        stats.register("usrloc", f"{dom}-users",
                       func=lambda: len(service.domains[dom].records) if dom in service.domains else 0)
        stats.register("usrloc", f"{dom}-contacts",
                       func=lambda: service.domains[dom].contact_count() if dom in service.domains else 0)
        self.expired_stat = stats.register("usrloc", f"{dom}-expires")

    # --- MI (OpenSIPS 3.4 ul_* commands and their JSON shapes) ------------------------------------
    def _svc(self) -> LocationService:
        if self.service is None:
            raise MIError("usrloc is not started", 500)
        return self.service

    def _fix_aor(self, aor: str) -> str:
        if self.param("use_domain"):
            if "@" not in aor:
                raise MIError("Domain missing in AOR", 400)
            return aor
        return aor.split("@", 1)[0]

    def _mi_contact(self, c: Contact, now: float) -> dict[str, Any]:
        if c.expires == 0:
            expires: Any = "permanent"
        elif c.expires <= now:
            expires = "expired"
        else:
            expires = int(c.expires - now)
        out: dict[str, Any] = {"Contact": c.contact, "ContactID": str(c.contact_id), "Expires": expires,
                               "Q": "" if c.q < 0 else _q_text(c.q), "Callid": c.callid, "Cseq": c.cseq}
        if c.user_agent:
            out["User-agent"] = c.user_agent
        if c.received:
            out["Received"] = c.received
        if c.path:
            out["Path"] = c.path
        svc = self._svc()
        out["State"] = "CS_NEW" if svc.db_mode == 0 else (
            "CS_DIRTY" if svc.db_mode == 2 and svc.is_dirty(c.contact_id) else "CS_SYNC")
        out["Flags"] = c.flags
        registry = self.server.registry
        names = getattr(registry, "branch_flags", None) if registry is not None else None
        out["Cflags"] = names.names(c.cflags) if names is not None and c.cflags else ""
        if c.socket:
            out["Socket"] = c.socket
        out["Methods"] = 0xFFFFFFFF if c.methods is None else c.methods
        if c.attr:
            out["Attr"] = c.attr
        if c.sip_instance:
            out["SIP_instance"] = c.sip_instance
        return out

    async def _record(self, table: str, aor: str) -> list[Contact]:
        svc = self._svc()
        if svc.db_mode != 3 and table not in svc.domains and table != "location":
            raise MIError("Table not found", 404)
        try:
            if svc.db_mode == 3:
                return await svc._read_aor(table, aor)
            return list((await svc.domain(table)).get(aor))
        except UsrlocError as exc:
            raise MIError(str(exc), 500) from None

    @mi_command("ul_dump", optional=("brief",), walks_rows=True, workers="one")
    async def mi_dump(self, brief: Any = None) -> dict[str, Any]:
        """Every AoR of every domain with its contacts (brief: the AoRs only)."""
        svc = self._svc()
        short = str(brief or "").lower() == "brief"
        now = svc.clock()
        out = []
        names = list(svc.domains) if svc.db_mode != 3 else ["location"]
        for name in names:
            aors: list[dict[str, Any]] = []
            if svc.db_mode == 3:
                rows = await (await svc._db(name)).query("location")
                grouped: dict[str, list[Contact]] = {}
                for row in rows:
                    c = Contact.from_row(row)
                    grouped.setdefault(svc.aor_of(c), []).append(c)
                records = list(grouped.items())
            else:
                records = [(a, list(cs)) for a, cs in svc.domains[name].aors()]
            async for batch in in_slices(records):
                for aor, contacts in batch:
                    entry: dict[str, Any] = {"AOR": aor}
                    if not short:
                        entry["Contacts"] = [self._mi_contact(c, now) for c in contacts]
                    aors.append(entry)
            out.append({"name": name, "hash_size": 1 << self.param("hash_size"), "AORs": aors})
        return {"Domains": out}

    @mi_command("ul_show_contact", workers="one")
    async def mi_show_contact(self, table_name: str, aor: str) -> dict[str, Any]:
        """The contacts of one AoR."""
        key = self._fix_aor(aor)
        contacts = await self._record(table_name, key)
        if not contacts:
            raise MIError("AOR not found", 404)
        now = self._svc().clock()
        return {"AOR": key, "Contacts": [self._mi_contact(c, now) for c in contacts]}

    @mi_command("ul_rm", workers="one")
    async def mi_rm(self, table_name: str, aor: str) -> str:
        """Delete an AoR with all its contacts."""
        key = self._fix_aor(aor)
        contacts = await self._record(table_name, key)
        if not contacts:
            raise MIError("AOR not found", 404)
        try:
            await self._svc().commit([Change("delete", table_name, key, c) for c in contacts])
        except UsrlocError as exc:
            raise MIError(f"Failed to delete AOR: {exc}", 500) from None
        return "OK"

    @mi_command("ul_rm_contact", workers="one")
    async def mi_rm_contact(self, table_name: str, aor: str, contact: str) -> str:
        """Delete one contact of an AoR."""
        key = self._fix_aor(aor)
        contacts = await self._record(table_name, key)
        if not contacts:
            raise MIError("AOR not found", 404)
        found = [c for c in contacts if c.contact == contact]
        if not found:
            raise MIError("Contact not found", 404)
        try:
            await self._svc().commit([Change("delete", table_name, key, c) for c in found])
        except UsrlocError as exc:
            raise MIError(str(exc), 500) from None
        return "OK"

    @mi_command("ul_flush", workers="each")
    async def mi_flush(self) -> str:
        """Write every pending change (db_mode 2) now."""
        await self._svc().flush()
        return "OK"

    @mi_command("ul_add", optional=("unused", "flags", "cflags", "methods"), workers="one")
    async def mi_add(self, table_name: str, aor: str, contact: str, expires: Any, q: Any,
                     unused: Any = None, flags: Any = 0, cflags: Any = 0, methods: Any = None) -> str:
        """Add (or update) a contact: expires in seconds, 0 = permanent."""
        key = self._fix_aor(aor)
        try:
            exp = int(str(expires))
            qv = float(str(q))
            fl, cf = int(str(flags or 0)), int(str(cflags or 0))
            meth = None if methods in (None, "") else int(str(methods))
        except ValueError:
            raise MIError("Bad parameter", 400) from None
        if exp < 0 or not 0.0 <= qv <= 1.0 or len(contact) > MAX_CONTACT_URI or not contact.strip():
            raise MIError("Bad parameter", 400)
        if table_name != "location" and table_name not in self._svc().domains:
            raise MIError("Table not found", 404)
        svc = self._svc()
        now = int(svc.clock())
        existing = [c for c in await self._record(table_name, key) if c.contact == contact]
        user, domain = aor_parts(key, bool(self.param("use_domain")))
        old = existing[0] if existing else None
        new = Contact(contact_id=old.contact_id if old else new_contact_id(key), username=user, domain=domain,
                      contact=contact, expires=now + exp if exp else 0, q=qv, callid=MI_UL_CALLID,
                      cseq=old.cseq if old else 1, flags=fl, cflags=cf, user_agent=MI_UL_UA,
                      methods=None if meth in (None, 0xFFFFFFFF) else meth, last_modified=now)
        try:
            await svc.commit([Change("put", table_name, key, new)])
        except UsrlocError as exc:
            raise MIError(str(exc), 500) from None
        return "OK"


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("usrloc: resync failed: %s", task.exception())


def _q_text(q: float) -> str:
    text = f"{q:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


MODULE = UsrlocModule
