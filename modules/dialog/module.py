"""The dialog module: OpenSIPS 3.4's dialog module over the sans-IO DialogTable (core.py).
docs/modules/dialog.md lists every name and where we differ.

This class holds the parameters, the lifecycle (start, workers, stop), the statistics, and follows the
calls (below); it is composed of parts with one job each, whose script functions, pseudo-variables and
MI commands it exports as its own (Module.part_types / export_parts):
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

from routescript.core.module import Arg, ConfigError, Module, Param, script_function
from routescript.script.context import REQUEST_ROUTE, MsgContext
from routescript.sip import ParseError, SIPRequest, SIPResponse

from .api import DialogApi, DialogInfo, DlgState
from .byes import ByeSender, parse_extra_headers
from .core import (
    BYE_ON_TIMEOUT,
    Change,
    Dialog,
    DialogLimitError,
    DialogTable,
    DlgEvent,
    parse_create_flags,
)
from .current import CSEQ_OK_KEY, DIR_KEY, DLG_KEY, current_dialog
from .mi import DialogMI
from .persistence import BadRow, dialog_of
from .profiles import DialogProfiles, as_list, parse_profiles, profiles_check
from .pvars import DialogPVars
from .values import DialogValues
from .writeback import TableWriter

log = logging.getLogger("routescript.dialog")

UNCONFIRMED_GUARD = 300.0     # seconds an unconfirmed/early dialog may wait for its final reply
MATCH_MODES = {"DID_ONLY": 0, "DID_FALLBACK": 1, "DID_NONE": 2}

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


def _create_flags_fixup(value: Any) -> Any:
    if isinstance(value, str):
        parse_create_flags(value)   # ValueError at load for an unknown or unbuilt flag
    return value


def _match_mode_fixup(value: Any) -> Any:
    if isinstance(value, str) and value.strip().upper() not in MATCH_MODES:
        raise ValueError(f"match_dialog mode {value!r}: expected DID_ONLY, DID_FALLBACK or DID_NONE")
    return value


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

    part_types = (DialogValues, DialogPVars, DialogProfiles, DialogMI)

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
        return (self.values, self.pvars_part, self.profiles, self.mi)

    async def start(self) -> None:
        rr: Any = self.server.modules.get("rr")
        if rr is not None and self.match_mode != 2 and self._on_loose_route not in rr.loose_route_callbacks:
            rr.loose_route_callbacks.append(self._on_loose_route)
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

    def _changed(self, change: Change | None, ctx: Any | None) -> None:
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
            self._changed(self.table.event(dlg, DlgEvent.TIMEOUT, now, reason="timeout"), None)
        self.rearm()

    # --- create_dialog and the initial INVITE's replies ------------------------------------------------

    @script_function("create_dialog", Arg("str", "flags", optional=True, fixup=_create_flags_fixup),
                     routes=(REQUEST_ROUTE,))
    def create_dialog(self, ctx: MsgContext, flags: str | None = None) -> int:
        """1 when made (or made before for this request); -1 for a request that cannot start one."""
        if current_dialog(ctx) is not None:
            return 1
        msg = ctx.msg
        if not isinstance(msg, SIPRequest) or msg.method != "INVITE":
            log.error("create_dialog: only an initial INVITE starts a dialog")
            return -1
        try:
            bits = parse_create_flags(flags)
            to_tag = msg.to.tag
            if to_tag:
                log.error("create_dialog: the INVITE has a To tag (Call-ID %s): not an initial request",
                          msg.call_id)
                return -1
            from_tag = msg.from_.tag
            if not from_tag:
                log.error("create_dialog: no From tag (Call-ID %s)", msg.call_id)
                return -1
            cseq = msg.cseq.number
            contacts = msg.contacts
            caller_route = tuple(msg.header_values("record-route"))
        except (ParseError, ValueError) as exc:
            log.error("create_dialog: %s (Call-ID %s)", getattr(exc, "reason", exc), msg.header("call-id"))
            return -1
        from routescript.modules.tm import newtran   # tm is a dependency at run time only

        transaction = newtran(ctx)
        if transaction is None:
            log.error("create_dialog: no transaction for the INVITE (Call-ID %s)", msg.call_id)
            return -1
        now = self.clock()
        try:
            dlg = self.table.create(call_id=msg.call_id, from_uri=str(msg.from_.uri), from_tag=from_tag,
                                    to_uri=str(msg.to.uri), req_uri=msg.ruri,
                                    from_header=msg.header("from") or "", to_header=msg.header("to") or "",
                                    now=now, timeout=self.default_timeout)
        except DialogLimitError as exc:
            log.error("create_dialog: %s (Call-ID %s)", exc, msg.call_id)
            return -1
        dlg.create_flags = bits
        dlg.caller_cseq = dlg.invite_cseq = cseq
        dlg.caller_contact = str(contacts[0].uri) if contacts and not contacts[0].star else None
        dlg.caller_route = caller_route
        if ctx.source is not None:
            dlg.caller_socket = str(getattr(ctx.source.socket, "name", "") or "")
        dlg.deadline = now + self._unconfirmed_guard()
        ctx.extra[DLG_KEY] = dlg
        self.processed.inc()
        hooks = transaction.reply_hooks
        if hooks is None:
            hooks = transaction.reply_hooks = []
        hooks.append(lambda response: self._on_reply(dlg, response))
        if self.match_mode != 2:
            self._add_did(ctx, dlg)
        info = dlg.info()
        for cb in list(self.callbacks.created):
            try:
                cb(info, ctx)
            except Exception:
                log.exception("dialog %s (Call-ID %s): a created callback failed", dlg.dlg_id, dlg.call_id)
        self.rearm()
        return 1

    def _unconfirmed_guard(self) -> float:
        """How long an INVITE may wait for its final reply: UNCONFIRMED_GUARD, or tm's fr_inv_timeout and
        a minute when that is longer."""
        tm: Any = self.server.modules.get("tm")
        settings = getattr(tm, "settings", None)
        fr_inv = float(getattr(settings, "fr_inv_timeout", 0) or 0)
        return max(UNCONFIRMED_GUARD, fr_inv + 60.0)

    def _add_did(self, ctx: MsgContext, dlg: Dialog) -> None:
        rr: Any = self.server.modules.get("rr")
        if rr is None:
            return
        try:
            rr.add_rr_param(ctx, f";{self.rr_param}={dlg.did}")
        except Exception:
            log.exception("create_dialog: the Record-Route cookie was not added (Call-ID %s)", dlg.call_id)

    def _on_reply(self, dlg: Dialog, response: SIPResponse) -> None:
        """A reply of the initial INVITE went upstream (the transaction's reply hook)."""
        if dlg.state is DlgState.DELETED:
            return
        status = response.status
        now = self.clock()
        try:
            to_tag = response.to.tag
        except ParseError:
            to_tag = None
        if status < 200:
            if not to_tag:
                return
            self._learn_callee(dlg, response, to_tag)
            self._changed(self.table.event(dlg, DlgEvent.RPL1XX, now), None)
        elif status < 300:
            if not to_tag:
                log.warning("dialog %s (Call-ID %s): a 2xx without To tag", dlg.dlg_id, dlg.call_id)
                return
            if dlg.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED):
                return    # a retransmission, or a second branch's 2xx: the first one made the dialog
            self._learn_callee(dlg, response, to_tag)
            self._changed(self.table.event(dlg, DlgEvent.RPL2XX, now), None)
        else:
            reason = "cancelled" if status == 487 else f"failed:{status}"
            self._changed(self.table.event(dlg, DlgEvent.RPLFAIL, now, reason=reason), None)

    def _learn_callee(self, dlg: Dialog, response: SIPResponse, to_tag: str) -> None:
        """To tag, Contact and route set of the callee (the last provisional's, then the 2xx's: with
        forking only the answering branch stays; choice, see the docs)."""
        dlg.to_tag = to_tag
        try:
            contacts = response.contacts
            if contacts and not contacts[0].star:
                dlg.callee_contact = str(contacts[0].uri)
            routes = response.header_values("record-route")
        except ParseError:
            return
        # towards the callee: the Record-Route entries above ours (added downstream), nearest first
        mine = [i for i, value in enumerate(routes) if self._is_ours(value)]
        dlg.callee_route = tuple(reversed(routes[:mine[0]])) if mine else tuple(reversed(routes))
        dlg.db_dirty = True

    def _is_ours(self, route: str) -> bool:
        from routescript.sip import parse_name_addr
        try:
            uri = parse_name_addr(route, "Record-Route").uri
            return bool(self.server.is_myself(uri.host, uri.port))
        except (ParseError, ValueError, AttributeError):
            return False

    # --- in-dialog requests ------------------------------------------------------------------------

    def _on_loose_route(self, ctx: MsgContext, params: str) -> None:
        if current_dialog(ctx) is None:
            self._match(ctx, self.match_mode, params)

    @script_function("match_dialog", Arg("str", "dlg_match_mode", optional=True, fixup=_match_mode_fixup),
                     routes=(REQUEST_ROUTE,))
    def match_dialog(self, ctx: MsgContext, mode: str | None = None) -> int:
        if current_dialog(ctx) is not None:
            return 1
        wanted = self.match_mode if mode is None else MATCH_MODES.get(mode.strip().upper(), self.match_mode)
        params = _route_params(ctx)
        return 1 if self._match(ctx, wanted, params) else -1

    def _match(self, ctx: MsgContext, mode: int, params: str) -> Dialog | None:
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            return None
        try:
            call_id, from_tag, to_tag = msg.call_id, msg.from_.tag, msg.to.tag
            cseq = msg.cseq.number
        except ParseError as exc:
            log.info("dialog: cannot match a request: %s", exc.reason)
            return None
        if not to_tag:
            return None
        found: tuple[Dialog, str] | None = None
        if mode in (0, 1):
            did = _param(params, self.rr_param)
            if did is not None:
                dlg = self.table.by_did(did)
                if dlg is not None and dlg.call_id == call_id and dlg.state is not DlgState.DELETED:
                    direction = "downstream" if from_tag == dlg.from_tag else "upstream"
                    found = (dlg, direction)
        if found is None and mode in (1, 2):
            found = self.table.match(call_id, from_tag, to_tag)
        if found is None:
            return None
        dlg, direction = found
        ctx.extra[DLG_KEY] = dlg
        ctx.extra[DIR_KEY] = direction
        self._on_request(ctx, dlg, direction, msg.method, cseq)
        return dlg

    def _on_request(self, ctx: MsgContext, dlg: Dialog, direction: str, method: str, cseq: int) -> None:
        """A matched in-dialog request: CSeq kept per side, ACK confirms, BYE ends."""
        now = self.clock()
        downstream = direction == "downstream"
        last = dlg.caller_cseq if downstream else dlg.callee_cseq
        if method == "ACK":
            ok = cseq == dlg.invite_cseq or cseq == last
            ctx.extra[CSEQ_OK_KEY] = ok
            if cseq == dlg.invite_cseq or dlg.state is DlgState.CONFIRMED:
                self._changed(self.table.event(dlg, DlgEvent.ACK, now), ctx)
            return
        if method == "CANCEL":
            ctx.extra[CSEQ_OK_KEY] = True
            return
        ok = cseq > last
        ctx.extra[CSEQ_OK_KEY] = ok
        if ok:
            if downstream:
                dlg.caller_cseq = cseq
            else:
                dlg.callee_cseq = cseq
            dlg.db_dirty = True
            self.writer.mark(dlg)
        else:
            log.info("dialog %s (Call-ID %s): %s with CSeq %d, not above %d", dlg.dlg_id, dlg.call_id,
                     method, cseq, last)
        if method == "BYE":
            reason = "bye-caller" if downstream else "bye-callee"
            if self.table.is_bogus(dlg, DlgEvent.BYE):
                log.info("dialog %s (Call-ID %s): BYE in state %s: not a confirmed dialog", dlg.dlg_id,
                         dlg.call_id, dlg.state.name)
                return
            self._changed(self.table.event(dlg, DlgEvent.BYE, now, reason=reason), ctx)

    @script_function("validate_dialog", routes=(REQUEST_ROUTE,))
    def validate_dialog(self, ctx: MsgContext) -> int:
        """1 valid; -1 bad CSeq, -2 bad remote target (the Request-URI after loose_route() is not the
        other side's Contact), -4 no dialog (OpenSIPS's codes; -3, the route set, is not checked)."""
        dlg = current_dialog(ctx)
        msg = ctx.msg
        if dlg is None or not isinstance(msg, SIPRequest) or DIR_KEY not in ctx.extra:
            return -4
        if not ctx.extra.get(CSEQ_OK_KEY, True):
            return -1
        target = dlg.callee_contact if ctx.extra[DIR_KEY] == "downstream" else dlg.caller_contact
        if target is not None and msg.method != "ACK" and not _same_uri(msg.ruri, target):
            return -2
        return 1

    def end_dialog(self, dlg: Dialog, extra_hdrs: str | None = None, reason: str = "mi") -> None:
        """dlg_end_dlg: BYEs both ways for a confirmed dialog; an early one is deleted here (its CANCEL
        is not built: the caller's INVITE goes on until it is answered or times out)."""
        if dlg.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED):
            self.byes.send(dlg, parse_extra_headers(extra_hdrs) if extra_hdrs else ())
        self._changed(self.table.event(dlg, DlgEvent.END, self.clock(), reason=reason), None)

def _param(params: str, name: str) -> str | None:
    for part in params.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def _route_params(ctx: MsgContext) -> str:
    state = ctx.extra.get("rr")
    params = getattr(state, "route_params", None)
    return params or ""


def _same_uri(a: str, b: str) -> bool:
    from routescript.sip import parse_uri
    try:
        ua, ub = parse_uri(a), parse_uri(b)
    except (ParseError, ValueError):
        return a == b
    return (ua.user, ua.host.lower(), ua.port) == (ub.user, ub.host.lower(), ub.port)
