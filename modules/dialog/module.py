"""The dialog module: OpenSIPS 3.4's dialog module over the sans-IO DialogTable (core.py).
docs/modules/dialog.md lists every name and where we differ.

This class holds the parameters, the lifecycle (start, workers, stop), the statistics and the one place
every state change goes through (changed(): callbacks, E_DLG_STATE_CHANGED, the lifetime timer); it is
composed of parts with one job each, whose script functions, pseudo-variables and MI commands it exports
as its own (Module.part_types / export_parts):
  creation.py  create_dialog() and the initial INVITE's replies
  matching.py  in-dialog requests (loose_route() callback, match_dialog, validate_dialog)
  values.py    store_dlg_value / fetch_dlg_value / $dlg_val, the dialog flags
  pvars.py     the $DLG_* pseudo-variables
  profiles.py  the profiles, their script functions and MI commands, sizes across workers
  mi.py        dlg_list, dlg_list_ctx, dlg_end_dlg
  byes.py      the BYEs the module sends (bye-on-timeout, dlg_end_dlg)
  writeback.py when the dialog table is written (db_mode 1/2/3); persistence.py its rows

How a call is followed:
- create_dialog() on an initial INVITE makes the dialog and its server transaction (as OpenSIPS does),
  and hooks the transaction's replies (ServerTransaction.reply_hooks, OpenSIPS's TMCB_RESPONSE_OUT):
  a 1xx with a To tag -> early, a 2xx -> confirmed (not ACKed), a final failure -> deleted. With rr
  loaded and dlg_match_mode 0/1 the Record-Route gets the dialog's cookie (;did=).
- In-dialog requests are matched after loose_route() (rr's callback, by ;did= then Call-ID and tags
  per dlg_match_mode) or by match_dialog(): the ACK of the 2xx confirms, a BYE from either side deletes.
- The lifetime ($DLG_timeout, default_timeout) runs from the 2xx; at its end the dialog is deleted and,
  with the bye-on-timeout ("B") flag, a BYE goes to both sides through server.requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from routescript.core.module import ConfigError, Module, Param

from .api import DialogApi, DialogInfo, DlgState
from .byes import ByeSender, parse_extra_headers
from .core import (
    BYE_ON_TIMEOUT,
    Change,
    Dialog,
    DialogTable,
    DlgEvent,
)
from .creation import DialogCreation
from .current import current_dialog
from .matching import DialogMatching
from .mi import DialogMI
from .persistence import BadRow, dialog_of
from .profiles import DialogProfiles, as_list, parse_profiles, profiles_check
from .pvars import DialogPVars
from .values import DialogValues
from .writeback import TableWriter

log = logging.getLogger("routescript.dialog")

_COLUMNS = "the dialog table keeps OpenSIPS's column names"


def _mode(value: int) -> None:
    if value not in (0, 1, 2):
        raise ValueError("dlg_match_mode is 0 (DID_ONLY), 1 (DID_FALLBACK) or 2 (DID_NONE)")


def _positive(value: int) -> None:
    if value <= 0:
        raise ValueError("must be a positive number of seconds")


def _db_mode(value: int) -> None:
    if value not in (0, 1, 2, 3):
        raise ValueError("db_mode is 0 (none), 1 (real-time), 2 (delayed) or 3 (shutdown)")


@dataclass(slots=True)
class Callbacks:
    """What the API's consumers registered (DLGCB_CREATED, DLGCB_STATE_CHANGED, DLGCB_LOADED)."""

    created: list[Callable[[DialogInfo, Any], None]] = field(default_factory=list)
    state_changed: list[Callable[[DialogInfo, DlgState, DlgState, Any], None]] = field(default_factory=list)
    loaded: list[Callable[[DialogInfo], None]] = field(default_factory=list)


class DialogModule(Module):
    name = "dialog"
    db_url_from_default = "db_url"   # OpenSIPS: init_db_url(db_url, ...)
    depends = ("tm",)
    uses = ("rr",)   # its Record-Route and loose_route() state, when loaded
    events = ("E_DLG_STATE_CHANGED",)
    params = (
        Param("enable_stats", int, 1, "accepted: the dialog statistics are always kept"),
        Param("hash_size", int, 4096, "accepted: the table is a Python dict; h_entry is the Call-ID's "
              "crc32 modulo 4096"),
        Param("log_profile_hash_size", int, 4, "accepted: profiles are counted in a dict"),
        Param("rr_param", str, "did", "the Record-Route parameter carrying the dialog cookie"),
        Param("default_timeout", int, 43200, "dialog lifetime in seconds, from its 2xx", check=_positive),
        Param("dlg_extra_hdrs", str, "", "header lines added to the BYEs the module sends"),
        Param("dlg_match_mode", int, 1, "0 DID_ONLY, 1 DID_FALLBACK, 2 DID_NONE", check=_mode),
        Param("options_ping_interval", int, 30, "", later="in-dialog OPTIONS pinging is not built"),
        Param("reinvite_ping_interval", int, 300, "", later="in-dialog re-INVITE pinging is not built"),
        Param("delete_delay", int, 0, "", later="a dialog is removed as soon as it ends"),
        Param("auto_prack_hangup_on_failure", int, 0, "", later="auto-prack is not built"),
        Param("auto_prack_fr_timeout", int, 0, "", later="auto-prack is not built"),
        Param("db_url", str, "", "the database of the dialog table (db_mode 1-3)"),
        Param("db_mode", int, 0, "0 none, 1 real-time, 2 delayed (db_update_period), 3 at shutdown",
              check=_db_mode),
        Param("db_update_period", int, 60, "seconds between writes with db_mode 2", check=_positive),
        Param("table_name", str, "dialog", "", later="the table is always named dialog"),
        Param("call_id_column", str, "callid", "", later=_COLUMNS),
        Param("from_uri_column", str, "from_uri", "", later=_COLUMNS),
        Param("from_tag_column", str, "from_tag", "", later=_COLUMNS),
        Param("to_uri_column", str, "to_uri", "", later=_COLUMNS),
        Param("to_tag_column", str, "to_tag", "", later=_COLUMNS),
        Param("from_cseq_column", str, "caller_cseq", "", later=_COLUMNS),
        Param("to_cseq_column", str, "callee_cseq", "", later=_COLUMNS),
        Param("from_route_column", str, "caller_route_set", "", later=_COLUMNS),
        Param("to_route_column", str, "callee_route_set", "", later=_COLUMNS),
        Param("from_contact_column", str, "caller_contact", "", later=_COLUMNS),
        Param("to_contact_column", str, "callee_contact", "", later=_COLUMNS),
        Param("from_sock_column", str, "caller_sock", "", later=_COLUMNS),
        Param("to_sock_column", str, "callee_sock", "", later=_COLUMNS),
        Param("dlg_id_column", str, "dlg_id", "", later=_COLUMNS),
        Param("state_column", str, "state", "", later=_COLUMNS),
        Param("start_time_column", str, "start_time", "", later=_COLUMNS),
        Param("timeout_column", str, "timeout", "", later=_COLUMNS),
        Param("profiles_column", str, "profiles", "", later=_COLUMNS),
        Param("vars_column", str, "vars", "", later=_COLUMNS),
        Param("sflags_column", str, "script_flags", "", later=_COLUMNS),
        Param("mflags_column", str, "module_flags", "", later=_COLUMNS),
        Param("flags_column", str, "flags", "", later=_COLUMNS),
        Param("profiles_with_value", str, "", "profiles whose members carry a value ('a;b')", multi=True,
              check=profiles_check),
        Param("profiles_no_value", str, "", "profiles without values ('a;b')", multi=True,
              check=profiles_check),
        Param("db_flush_vals_profiles", int, 0, "accepted: values and profiles are always written"),
        Param("timer_bulk_del_no", int, 1, "accepted: ended dialogs are removed at once"),
        Param("race_condition_timeout", int, 5, "", later="RFC 5407 race detection is not built"),
        Param("cachedb_url", str, "", "", later="shared profiles through cachedb are not built"),
        Param("profile_value_prefix", str, "dlg_val_", "", later="shared profiles are not built"),
        Param("profile_no_value_prefix", str, "dlg_noval_", "", later="shared profiles are not built"),
        Param("profile_size_prefix", str, "dlg_size_", "", later="shared profiles are not built"),
        Param("profile_timeout", int, 86400, "", later="shared profiles are not built"),
        Param("dialog_replication_cluster", int, 0, "", later="dialog replication is not built"),
        Param("profile_replication_cluster", int, 0, "", later="profile replication is not built"),
        Param("replicate_profiles_timer", int, 10, "", later="profile replication is not built"),
        Param("replicate_profiles_check", int, 10, "", later="profile replication is not built"),
        Param("replicate_profiles_buffer", int, 1400, "", later="profile replication is not built"),
        Param("replicate_profiles_expire", int, 10, "", later="profile replication is not built"),
        Param("cluster_auto_sync", int, 1, "", later="dialog replication is not built"),
    )
    # OpenSIPS 3.4 functions not built: refused at load (each call is a load-time error)
    _REFUSED: ClassVar[dict[str, str]] = {
        "fix_route_dialog": "not built",
        "get_dialog_info": "not built", "get_dialog_vals": "not built", "get_dialogs_by_val": "not built",
        "get_dialogs_by_profile": "not built", "set_dlg_sharing_tag": "dialog clustering is not built",
        "load_dialog_ctx": "not built", "unload_dialog_ctx": "not built",
        "dlg_on_timeout": "not built", "dlg_on_answer": "not built", "dlg_on_hangup": "not built",
        "dlg_send_sequential": "not built", "dlg_inc_cseq": "not built", "load_dlg": "not built",
        "test_and_set_dlg_flag": "not built",
    }

    part_types = (DialogCreation, DialogMatching, DialogValues, DialogPVars, DialogProfiles, DialogMI)

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.table = DialogTable()
        self.callbacks = Callbacks()
        self.api = DialogApi(self)
        self.rr_param = str(self.param("rr_param")) or "did"
        self.match_mode = int(self.param("dlg_match_mode"))
        self.default_timeout = int(self.param("default_timeout"))
        self.clock: Callable[[], float] = time.time
        self.slot = 0
        self.n_total = 1
        self.writer = TableWriter(int(self.param("db_mode")), str(self.param("db_url") or ""),
                                  float(self.param("db_update_period")))
        self.byes = ByeSender(server, parse_extra_headers(self.param("dlg_extra_hdrs") or ""))
        self.creation = DialogCreation(self)
        self.matching = DialogMatching(self)
        self.values = DialogValues(self.writer)
        self.pvars_part = DialogPVars(self)
        self.profiles = DialogProfiles(self, parse_profiles(as_list(self.param("profiles_with_value"))),
                                       parse_profiles(as_list(self.param("profiles_no_value"))))
        self.mi = DialogMI(self)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused.update({name: f"dialog: {name}() is {why}" for name, why in self._REFUSED.items()})
        stats = server.statistics
        stats.register("dialog", "active_dialogs", func=self._count_active)
        stats.register("dialog", "early_dialogs", func=self._count_early)
        self.processed = stats.register("dialog", "processed_dialogs")
        self.expired = stats.register("dialog", "expired_dialogs")
        self.failed = stats.register("dialog", "failed_dialogs")

    def export_parts(self) -> Sequence[object]:
        return (self.creation, self.matching, self.values, self.pvars_part, self.profiles, self.mi)

    async def start(self) -> None:
        rr: Any = self.server.modules.get("rr")
        on_loose_route = self.matching.on_loose_route
        if rr is not None and self.match_mode != 2 and on_loose_route not in rr.loose_route_callbacks:
            rr.loose_route_callbacks.append(on_loose_route)
        if self.writer.db_mode:
            await self.writer.open(self.server)
            await self._load()
            self.writer.start_periodic()

    async def _load(self) -> None:
        """The dialogs of the table back in memory (those of this worker's Call-IDs when several run):
        a row that is no dialog is logged and skipped; an expired one is deleted; then DLGCB_LOADED."""
        rows = await self.writer.rows()
        now = self.clock()
        loaded = 0
        for row in rows:
            call_id = row.get("callid")
            if self.n_total > 1 and isinstance(call_id, str) \
                    and zlib.crc32(call_id.encode()) % self.n_total != self.slot:
                continue
            try:
                dlg, warnings = dialog_of(row, self.profiles.with_value, self.profiles.no_value)
            except BadRow as exc:
                log.error("dialog table: row dlg_id=%s (Call-ID %s) skipped: %s", row.get("dlg_id"), call_id,
                          exc)
                continue
            if dlg.deadline is not None and dlg.deadline <= now:
                log.info("dialog table: dialog %s (Call-ID %s) expired while we were down: deleted",
                         dlg.dlg_id, dlg.call_id)
                self.writer.delete_row(dlg.db_id)
                continue
            try:
                self.table.add(dlg)
            except ValueError as exc:
                log.error("dialog table: row dlg_id=%s (Call-ID %s) skipped: %s", row.get("dlg_id"), call_id,
                          exc)
                continue
            for warning in warnings:
                log.warning("dialog %s (Call-ID %s): %s", dlg.dlg_id, dlg.call_id, warning)
            loaded += 1
            info = dlg.info()
            for cb in list(self.callbacks.loaded):
                try:
                    cb(info)
                except Exception:
                    log.exception("dialog %s (Call-ID %s): a loaded callback failed", dlg.dlg_id, dlg.call_id)
        if rows:
            log.info("dialog: %d dialog(s) loaded from the database", loaded)
        self.rearm()
        self.writer.loaded()

    def check(self) -> None:
        """Before fork: the shared profile counters when the server runs several workers."""
        wrong = self.profiles.check()
        if wrong:
            raise ConfigError(wrong)
        writer = self.writer
        if writer.db_mode and not writer.db_url:
            raise ConfigError(f"dialog: db_mode {writer.db_mode} needs modparam(\"dialog\", \"db_url\", ...)")
        try:
            slots = int(self.server.config.worker_plan().total)
        except Exception:   # noqa: BLE001 - a test's fake server has no plan: one process
            slots = 1
        self.profiles.share(slots)

    def run_as_worker(self, identity: Any) -> None:
        """In worker `slot` of `n_total`: h_id numbered slot+1, slot+1+n, ... (ids unique per server);
        profile memberships counted in the shared rows of the slot."""
        self.slot = int(identity.slot)
        self.n_total = int(identity.n_total)
        self.table = DialogTable(id_base=self.slot, id_step=int(identity.n_total))
        self.profiles.run_in_worker(self.slot, self.table)

    async def adopt_worker(self, slot: int) -> int:
        """A dead worker's dialogs were in its memory only (db_mode 0): nothing to take over; its profile
        counts are cleared so they stop counting."""
        self.profiles.adopt_worker(slot)
        return 0

    def resync(self) -> None:
        """Nothing is announced between workers: a dialog lives in the worker of its Call-ID."""

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.writer.stop(self.table)
        for task in list(self._tasks):
            task.cancel()

    def _count_active(self) -> int:
        return sum(1 for d in self.table if d.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED))

    def _count_early(self) -> int:
        return sum(1 for d in self.table if d.state is DlgState.EARLY)

    # --- the API backend (api.DialogApi forwards here) -----------------------------------------------

    def create(self, ctx: Any) -> int:
        """create_dialog() for the API (acc's cdr flag)."""
        return self.creation.create_dialog(ctx)

    def current_info(self, ctx: Any) -> DialogInfo | None:
        dlg = current_dialog(ctx)
        return dlg.info() if dlg is not None else None

    def set_flag(self, dlg_id: str, flag: int) -> None:
        dlg = self.table.get(dlg_id)
        if dlg is None:
            log.warning("set_flag: no dialog %s", dlg_id)
            return
        dlg.flags |= flag
        self.writer.mark(dlg)

    def store_value(self, dlg_id: str, name: str, value: str) -> None:
        dlg = self.table.get(dlg_id)
        if dlg is None:
            log.warning("store_value: no dialog %s", dlg_id)
            return
        self.values.store(dlg, name, value)

    def fetch_value(self, dlg_id: str, name: str) -> str | None:
        dlg = self.table.get(dlg_id)
        return dlg.values.get(name) if dlg is not None else None

    def infos(self) -> list[DialogInfo]:
        return [d.info() for d in self.table]

    # --- state changes: one place raises callbacks, the event, statistics and the timer -------------

    def changed(self, change: Change | None, ctx: Any | None) -> None:
        if change is None:
            return
        dlg, old, new = change.dialog, change.old, change.new
        log.debug("dialog %s (Call-ID %s): %s -> %s", dlg.dlg_id, dlg.call_id, old.name, new.name)
        self.writer.mark(dlg)
        if new is DlgState.DELETED:
            self.table.remove(dlg)
            if dlg.end_reason == "timeout":
                self.expired.inc()
            elif old in (DlgState.UNCONFIRMED, DlgState.EARLY):
                self.failed.inc()
        info = dlg.info()
        for cb in list(self.callbacks.state_changed):
            try:
                cb(info, old, new, ctx)
            except Exception:
                log.exception("dialog %s (Call-ID %s): a state callback failed", dlg.dlg_id, dlg.call_id)
        events = getattr(self.server, "events", None)
        if events is not None and events.wanted("E_DLG_STATE_CHANGED"):
            events.raise_event_nowait("E_DLG_STATE_CHANGED", {
                "id": dlg.did, "db_id": str(dlg.db_id), "callid": dlg.call_id, "from_tag": dlg.from_tag,
                "to_tag": dlg.to_tag or "", "old_state": int(old), "new_state": int(new)})
        self.rearm()

    def rearm(self) -> None:
        """One loop timer at the earliest deadline."""
        deadline = self.table.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(max(0.0, deadline - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.expire(self.clock())

    def expire(self, now: float) -> None:
        """Every dialog past its deadline ends (the unconfirmed guard too); with bye-on-timeout a
        confirmed one gets its BYEs."""
        for dlg in self.table.due(now):
            confirmed = dlg.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED)
            log.info("dialog %s (Call-ID %s): %s", dlg.dlg_id, dlg.call_id,
                     "lifetime expired" if confirmed else "no final reply came")
            if confirmed and dlg.create_flags & BYE_ON_TIMEOUT:
                self.byes.send(dlg)
            self.changed(self.table.event(dlg, DlgEvent.TIMEOUT, now, reason="timeout"), None)
        self.rearm()

    def end_dialog(self, dlg: Dialog, extra_hdrs: str | None = None, reason: str = "mi") -> None:
        """dlg_end_dlg: BYEs both ways for a confirmed dialog; an early one is deleted here (its CANCEL
        is not built: the caller's INVITE goes on until it is answered or times out)."""
        if dlg.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED):
            self.byes.send(dlg, parse_extra_headers(extra_hdrs) if extra_hdrs else ())
        self.changed(self.table.event(dlg, DlgEvent.END, self.clock(), reason=reason), None)

