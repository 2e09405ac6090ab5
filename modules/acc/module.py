"""The acc module: OpenSIPS 3.4's accounting to syslog-style log lines and to the acc / missed_calls
tables, per transaction and per call (CDRs through the dialog module). docs/modules/acc.md lists every
name and where we differ.

How a request is accounted (OpenSIPS acc_logic.c):
- do_accounting(type [, flags [, table]]) marks the request: an AccContext in ctx.extra (the $acc_extra
  values live there too) and a reply hook on its transaction (OpenSIPS's TMCB_RESPONSE_OUT; for an
  INVITE a failure hook too, TMCB_ON_FAILURE).
- tm's branches of an INVITE all failed (its failure hooks, TMCB_ON_FAILURE, before failure_route), or
  a final failure of an INVITE goes upstream while "missed" is still on -> a missed call (log line /
  missed_calls row), then "missed" is off (one report per call, unless failure_route re-arms it);
- Each reply the transaction sends upstream reaches the reply hook:
  a 2xx (a failure too with "failed", a 1xx with a body with early_media) -> "transaction answered"
  (log line / acc row), except the 2xx of an initial INVITE with "cdr": then the call's data go into
  its dialog, and the dialog's end (BYE, lifetime, dlg_end_dlg) writes one CDR ("call ended" line /
  acc row with duration, ms_duration, setuptime, created).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.handlers
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from routescript.core.module import Arg, ConfigError, Module, Param, pseudo_variable, script_function
from routescript.db import Column
from routescript.modules.dialog.api import DLG_FLAG_ACC_CDR, DlgState, bind_dialog
from routescript.script.context import BRANCH_ROUTE, FAILURE_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.script.registry import FunctionSpec, PVarSpec
from routescript.sip import ParseError, SIPRequest, SIPResponse

from . import records
from .records import Core, Record
from .spec import (
    MAX_EXTRA_VALUE,
    AccMask,
    ExtraFields,
    check_extra_fields,
    drop_mask,
    flags_fixup,
    mask_of,
    optional_types_fixup,
    parse_extra_fields,
    parse_flags,
    parse_types,
    table_fixup,
    types_fixup,
    valid_table,
)
from .writer import AccWriter

log = logging.getLogger("routescript.acc")
acc_log = logging.getLogger("routescript.acc.log")   # the "ACC: ..." lines (log_level, log_facility)

CTX_KEY = "acc"                  # ctx.extra: the AccContext of the request
DLG_VALUE = "__acc"              # the dialog value holding a CDR's data (JSON)
_ROUTES = (REQUEST_ROUTE, FAILURE_ROUTE)
_REQUEST_ROUTES = (REQUEST_ROUTE, FAILURE_ROUTE, BRANCH_ROUTE)
L_NOTICE = 2

_COLUMNS = "the acc and missed_calls tables keep OpenSIPS's column names"
_FACILITIES = frozenset({"LOG_AUTH", "LOG_AUTHPRIV", "LOG_CRON", "LOG_DAEMON", "LOG_FTP", "LOG_KERN",
                         "LOG_LPR", "LOG_MAIL", "LOG_NEWS", "LOG_SYSLOG", "LOG_USER", "LOG_UUCP",
                         *(f"LOG_LOCAL{i}" for i in range(8))})
_NOT_BUILT_FUNCTIONS = {
    "acc_aaa_request": "AAA accounting is not built",
    "acc_evi_request": "event interface accounting is not built",
    "acc_new_leg": "multi-leg accounting (leg_fields) is not built",
    "acc_load_ctx_from_dlg": "loading another dialog's accounting context is not built",
    "acc_unload_ctx_from_dlg": "loading another dialog's accounting context is not built",
}


def _bool01(value: int) -> None:
    if value not in (0, 1):
        raise ValueError("must be 0 or 1")


def _facility(value: str) -> None:
    if value.strip().upper() not in _FACILITIES:
        raise ValueError(f"invalid log facility {value!r} (LOG_DAEMON, LOG_LOCAL0..7, ...)")


def _level(value: int) -> None:
    if not -3 <= value <= 4:
        raise ValueError("log_level is an OpenSIPS level, -3 (L_ALERT) to 4 (L_DBG)")


def _table_name(value: str) -> None:
    if not valid_table(value):
        raise ValueError(f"table name {value!r}: letters, digits and '_' only")


@dataclass(slots=True)
class AccContext:
    """The accounting state of one request: what do_accounting() asked, the $acc_extra values and, for a
    CDR, when the call was created. Shared by the request route and the transaction's reply hook."""

    mask: AccMask = field(default_factory=AccMask)
    table: str | None = None
    created: float | None = None
    extras: dict[str, str] = field(default_factory=dict)
    upstream: bool = False
    called: bool = False      # do_accounting() ran (the log line then carries created/setuptime)
    dlg_id: str | None = None  # the call's dialog (cdr)


class AccHook:
    """The reply hook of an accounted transaction (a class, so failure_route finds its context)."""

    __slots__ = ("acc", "answered", "module", "request", "transaction")

    def __init__(self, module: AccModule, transaction: Any, acc: AccContext) -> None:
        self.module = module
        self.transaction = transaction
        self.request: SIPRequest = transaction.request
        self.acc = acc
        self.answered = False

    @property
    def local(self) -> bool:
        """The reply being sent was made here (t_reply, tm's 408/487), not relayed from a branch."""
        return not getattr(self.transaction, "relayed_reply", False)

    def __call__(self, response: SIPResponse) -> None:
        self.module.on_reply(self, response)

    def on_failure(self, response: SIPResponse, local: bool) -> None:
        """tm's branches failed (TMCB_ON_FAILURE), before failure_route."""
        self.module.on_failure(self, response, local)


class AccModule(Module):
    name = "acc"
    depends = ("tm",)
    uses = ("dialog", "rr")   # CDRs live in dialogs; detect_direction asks rr
    params = (
        Param("early_media", int, 0, "1: a provisional reply with a body is accounted too", check=_bool01),
        Param("report_cancels", int, 0, "1: do_accounting() on a CANCEL accounts it", check=_bool01),
        Param("detect_direction", int, 0, "1: From/To tags swapped for upstream in-dialog requests (rr's "
              "ftag)", check=_bool01),
        Param("log_level", int, L_NOTICE, "the level of the ACC: lines", check=_level),
        Param("log_facility", str, "LOG_DAEMON", "syslog facility of the ACC: lines (with syslog_enabled)",
              check=_facility),
        Param("extra_fields", str, "", "\"backend: tag->name; tag2\" ($acc_extra(tag))", multi=True,
              check=check_extra_fields),
        Param("leg_fields", str, "", "", later="multi-leg accounting ($acc_leg) is not built"),
        Param("multi_leg_info", str, "", "",
              later="multi-leg accounting is not built (OpenSIPS 3.x names it leg_fields)"),
        Param("aaa_url", str, "", "", later="AAA accounting is not built"),
        Param("service_type", int, -1, "", later="AAA accounting is not built"),
        Param("db_url", str, "", "the database of the acc and missed_calls tables"),
        Param("db_table_acc", str, "acc", "the table of accounted transactions and CDRs", check=_table_name),
        Param("db_table_missed_calls", str, "missed_calls", "the table of missed calls", check=_table_name),
        Param("db_table_avp", str, "", "", later="do_accounting()'s table argument replaces it"),
        Param("acc_method_column", str, "method", "", later=_COLUMNS),
        Param("acc_from_tag_column", str, "from_tag", "", later=_COLUMNS),
        Param("acc_to_tag_column", str, "to_tag", "", later=_COLUMNS),
        Param("acc_callid_column", str, "callid", "", later=_COLUMNS),
        Param("acc_sip_code_column", str, "sip_code", "", later=_COLUMNS),
        Param("acc_sip_reason_column", str, "sip_reason", "", later=_COLUMNS),
        Param("acc_time_column", str, "time", "", later=_COLUMNS),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.refused.update({name: f"acc: {name}() - {why}" for name, why in _NOT_BUILT_FUNCTIONS.items()})
        raw = params.get("extra_fields") or []
        self.extra: ExtraFields = parse_extra_fields(raw if isinstance(raw, (list, tuple)) else [raw])
        self.log_names = self.extra.of("log")
        self.db_names = self.extra.of("db")
        self.db_url = str(self.param("db_url") or "")
        self.table_acc = str(self.param("db_table_acc"))
        self.table_missed = str(self.param("db_table_missed_calls"))
        self.early_media = bool(self.param("early_media"))
        self.report_cancels = bool(self.param("report_cancels"))
        self.detect_direction = bool(self.param("detect_direction"))
        from routescript.core.log import py_level

        self.level = py_level(int(self.param("log_level")))
        self.clock: Callable[[], float] = time.time
        self.dialogs: Any = None
        extra_columns = [Column(name, "text", nullable=True, null_default=True) for _, name in self.db_names]
        self.writer = AccWriter(self._database, extra_columns)
        self._syslog: logging.Handler | None = None
        self.cdr_used = False
        stats = server.statistics
        self.n_log = stats.register("acc", "log_records")
        self.n_db = stats.register("acc", "db_records")
        self.n_cdr = stats.register("acc", "cdrs")
        self.n_missed = stats.register("acc", "missed_calls")
        stats.register("acc", "db_pending", func=lambda: self.writer.pending)
        stats.register("acc", "db_dropped", func=lambda: self.writer.dropped)

    # --- load time ---------------------------------------------------------------------------------

    def check(self) -> None:
        if self.db_names and not self.db_url:
            raise ConfigError("acc: db extra_fields defined but no db_url "
                              "(modparam(\"acc\", \"db_url\", ...))")

    def _check_neighbours(self) -> None:
        """What needs the other modules (made after check(): the loader hands them over only once every
        module is made), at start: rr for detect_direction, dialog for the cdr flag."""
        modules: Any = self.server.modules
        if self.detect_direction:
            rr: Any = modules.get("rr")
            if rr is None:
                raise ConfigError("acc: detect_direction needs the rr module loaded")
            if not bool(rr.param("append_fromtag")):
                raise ConfigError("acc: detect_direction needs modparam(\"rr\", \"append_fromtag\", 1)")
        if self.cdr_used and self.dialogs is None:
            raise ConfigError("acc: do_accounting(..., \"cdr\") needs the dialog module loaded "
                              "(loadmodule \"dialog.so\")")

    def functions(self) -> list[FunctionSpec]:
        """do_accounting()'s type and flags checked at load against this configuration: "db" needs
        db_url, "cdr" the dialog module (OpenSIPS refuses both in the fixup)."""
        out = []
        for spec in super().functions():
            if spec.name != "do_accounting":
                out.append(spec)
                continue
            args = list(spec.args)
            args[0] = dataclasses.replace(args[0], fixup=self._types_fixup)
            args[1] = dataclasses.replace(args[1], fixup=self._flags_fixup)
            out.append(dataclasses.replace(spec, args=tuple(args)))
        return out

    def _types_fixup(self, value: Any) -> Any:
        types_fixup(value)
        if "db" in parse_types(str(value)) and not self.db_url:
            raise ValueError("do_accounting(\"db\") needs modparam(\"acc\", \"db_url\", ...)")
        return value

    def _flags_fixup(self, value: Any) -> Any:
        flags_fixup(value)
        if value is not None and "cdr" in parse_flags(str(value)):
            self.cdr_used = True      # start() then needs the dialog module
        return value

    def pvars(self) -> list[PVarSpec]:
        return [dataclasses.replace(p, key="required", check_key=self._check_tag) if p.name == "acc_extra"
                else p for p in super().pvars()]

    def _check_tag(self, key: str) -> None:
        if "$" not in key and key not in self.extra.tags:
            raise ValueError("no such tag in extra_fields "
                             f"({', '.join(self.extra.tags) or 'none defined'})")

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.dialogs = bind_dialog(self.server)
        if self.dialogs is not None:
            self.dialogs.on_state_changed(self._dialog_changed)
        self._check_neighbours()
        if self.db_url:
            await self.writer.prepare(self.table_acc, "acc")
            await self.writer.prepare(self.table_missed, "missed_calls")
        self._use_facility()

    def _use_facility(self) -> None:
        """With syslog_enabled, the ACC: lines go to syslog under log_facility (OpenSIPS's LM_GEN2), on a
        handler of their own; otherwise they go where the core's log goes."""
        config: Any = self.server.config
        get = getattr(config, "get", None)
        if get is None or not get("syslog_enabled"):
            return
        facility = str(self.param("log_facility")).strip().upper()
        if facility == str(get("syslog_facility") or "LOG_DAEMON").upper():
            return
        try:
            handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=getattr(logging.handlers.SysLogHandler, facility))
        except OSError as exc:
            log.warning("acc: syslog not available (%s): ACC lines go to the core's log", exc)
            return
        handler.setFormatter(logging.Formatter("%(message)s"))
        acc_log.addHandler(handler)
        acc_log.propagate = False
        self._syslog = handler

    async def stop(self) -> None:
        await self.writer.close()
        if self._syslog is not None:
            acc_log.removeHandler(self._syslog)
            acc_log.propagate = True
            self._syslog.close()
            self._syslog = None

    async def _database(self) -> Any:
        return await self.server.database(self.db_url)

    # --- script functions --------------------------------------------------------------------------

    @script_function("do_accounting", Arg("str", "type", fixup=types_fixup, static=True),
                     Arg("str", "flags", optional=True, fixup=flags_fixup, static=True),
                     Arg("str", "table", optional=True, fixup=table_fixup), routes=_ROUTES)
    def do_accounting(self, ctx: MsgContext, types: str, flags: str | None = None,
                      table: str | None = None) -> int:
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            log.error("do_accounting: no request")
            return -1
        if msg.method == "CANCEL" and not self.report_cancels:
            log.warning("do_accounting() called on CANCEL but 'report_cancels' is not set: the CANCEL is "
                        "not accounted")
            return 1
        try:
            mask = mask_of(parse_types(types), parse_flags(flags))
            initial = not msg.to.tag
        except (ValueError, ParseError) as exc:
            log.error("do_accounting: %s", getattr(exc, "reason", exc))
            return -1
        if table is not None and table and not valid_table(table):
            log.error("do_accounting: table name %r: letters, digits and '_' only", table)
            return -1
        acc = self._context(ctx, create=True)
        assert acc is not None
        hook = self._hook_of(ctx)
        if mask.on("db") and (table or acc.table is None):
            acc.table = table or self.table_acc
        if mask.any("cdr") and not acc.mask.any("cdr") and initial:
            acc.created = self.clock()
            if msg.method == "INVITE" and not self._with_dialog(ctx, acc):
                return -1
        acc.mask = acc.mask | mask
        acc.called = True
        if hook is None:
            if not self._hook(ctx, msg, acc):
                return -1
            if self.detect_direction and not initial:
                rr: Any = self.server.modules.get("rr")
                acc.upstream = rr is not None and rr.is_direction(ctx, "upstream") == 1
        return 1

    @script_function("drop_accounting", Arg("str", "type", optional=True, fixup=optional_types_fixup,
                                            static=True),
                     Arg("str", "flags", optional=True, fixup=flags_fixup, static=True), routes=_ROUTES)
    def drop_accounting(self, ctx: MsgContext, types: str | None = None, flags: str | None = None) -> int:
        acc = self._context(ctx, create=False)
        if acc is None or not acc.called:
            log.error("drop_accounting: do_accounting() was not used for this request")
            return -1
        chosen = parse_types(types) if types and types.strip() else None
        acc.mask = acc.mask.without(drop_mask(chosen, parse_flags(flags)))
        return 1

    @script_function("acc_log_request", Arg("str", "comment"), routes=_REQUEST_ROUTES)
    def acc_log_request(self, ctx: MsgContext, comment: str) -> int:
        record = self._request_record(ctx, comment)
        if record is None:
            return -1
        if self.logging:
            self._emit_log(records.log_line(records.REQUEST, record, self.log_names))
        return 1

    @script_function("acc_db_request", Arg("str", "comment"), Arg("str", "table", fixup=table_fixup),
                     routes=_REQUEST_ROUTES)
    def acc_db_request(self, ctx: MsgContext, comment: str, table: str) -> int:
        if not self.db_url:
            log.error("acc_db_request: no db_url: modparam(\"acc\", \"db_url\", ...)")
            return -1
        if not valid_table(table):
            log.error("acc_db_request: table name %r: letters, digits and '_' only", table)
            return -1
        record = self._request_record(ctx, comment)
        if record is None:
            return -1
        missed = table == self.table_missed
        self._emit_row(table, "missed_calls" if missed else "acc", records.row(record, self.db_names,
                                                                               missed=missed))
        return 1

    def _request_record(self, ctx: MsgContext, comment: str) -> Record | None:
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            log.error("acc_*_request: no request")
            return None
        code, reason = records.parse_comment(comment)
        acc = self._context(ctx, create=False)
        try:
            core = Core(msg.method, msg.from_.tag or "", msg.to.tag or "", msg.call_id, code, reason)
        except ParseError as exc:
            log.error("acc_*_request: %s", exc.reason)
            return None
        return Record(core, self.clock(), context=acc is not None and acc.called,
                      created=acc.created if acc is not None else None,
                      extras=dict(acc.extras) if acc is not None else {})

    # --- $acc_extra ---------------------------------------------------------------------------------

    @pseudo_variable("acc_extra", setter="set_extra")
    def pv_extra(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        acc = self._context(ctx, create=False)
        return acc.extras.get(str(key)) if acc is not None else None

    def set_extra(self, ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
        tag = str(key)
        if tag not in self.extra.tags:
            log.error("$acc_extra(%s): no such tag in extra_fields", tag)
            return
        acc = self._context(ctx, create=True)
        assert acc is not None
        if value is None:
            acc.extras.pop(tag, None)
            return
        text = str(value)
        if len(text) > MAX_EXTRA_VALUE:
            log.warning("$acc_extra(%s): value of %d characters cut to %d", tag, len(text), MAX_EXTRA_VALUE)
            text = text[:MAX_EXTRA_VALUE]
        acc.extras[tag] = text

    # --- the request's context and its transaction ---------------------------------------------------

    def _context(self, ctx: MsgContext, *, create: bool) -> AccContext | None:
        """The request's AccContext: in ctx.extra, else (failure_route) its transaction's hook; made when
        `create` (OpenSIPS init_acc_ctx: $acc_extra may be set before do_accounting())."""
        acc: AccContext | None = ctx.extra.get(CTX_KEY)
        if acc is None:
            hook = self._hook_of(ctx)
            if hook is not None:
                acc = hook.acc
            elif create:
                acc = AccContext()
            if acc is not None:
                ctx.extra[CTX_KEY] = acc
        return acc

    @staticmethod
    def _hook_of(ctx: MsgContext) -> AccHook | None:
        transaction = ctx.transaction
        for hook in getattr(transaction, "reply_hooks", None) or ():
            if isinstance(hook, AccHook):
                return hook
        return None

    def _hook(self, ctx: MsgContext, msg: SIPRequest, acc: AccContext) -> bool:
        if msg.method == "ACK":
            log.error("do_accounting: an ACK has no transaction to account (account its INVITE)")
            return False
        from routescript.modules.tm import newtran   # tm is a dependency at run time only

        transaction = newtran(ctx)
        if transaction is None:
            log.error("do_accounting: no transaction for the request (Call-ID %s)", msg.call_id)
            return False
        hook = AccHook(self, transaction, acc)
        if transaction.reply_hooks is None:
            transaction.reply_hooks = []
        transaction.reply_hooks.append(hook)
        if msg.method == "INVITE":
            if transaction.failure_hooks is None:
                transaction.failure_hooks = []
            transaction.failure_hooks.append(hook.on_failure)
        return True

    def _with_dialog(self, ctx: MsgContext, acc: AccContext) -> bool:
        """cdr on an initial INVITE: its dialog (made when the script did not make one)."""
        if self.dialogs is None:
            log.error("do_accounting: the cdr flag needs the dialog module")
            return False
        dlg = self.dialogs.create(ctx)
        if dlg is None:
            log.error("do_accounting: no dialog for the call: no CDR")
            return False
        acc.dlg_id = dlg.dlg_id
        return True

    # --- replies (TMCB_RESPONSE_OUT) -----------------------------------------------------------------

    def on_reply(self, hook: AccHook, response: SIPResponse) -> None:
        acc, request, status = hook.acc, hook.request, response.status
        invite = request.method == "INVITE"
        if status >= 200:
            if hook.answered:
                return          # a 2xx retransmission or a late 2xx after our final: reported once
            hook.answered = True
        local = hook.local
        if invite and status >= 300 and acc.mask.any("missed"):
            self._missed(acc, request, response, local=local)
        if not self._wanted(acc, response):
            return
        if invite and 200 <= status < 300 and acc.mask.any("cdr") and not request.to.tag:
            self._keep_for_cdr(acc, request, response)
            return
        record = self._record(acc, request, response, local=local)
        if acc.mask.on("log") and self.logging:
            self._emit_log(records.log_line(records.ANSWERED, record, self.log_names))
        if acc.mask.on("db") and acc.table:
            self._emit_row(acc.table, "acc", records.row(record, self.db_names))

    def on_failure(self, hook: AccHook, response: SIPResponse, local: bool) -> None:
        """The INVITE's branches failed, before failure_route: a missed call now, with that failure (a
        timeout: 408 Request Timeout, no To tag), as OpenSIPS's on_missed at TMCB_ON_FAILURE - a call the
        failure_route then sends to voicemail was still missed. "missed" is then off; failure_route
        re-arms it to report the next attempt too."""
        if hook.acc.mask.any("missed"):
            self._missed(hook.acc, hook.request, response, local=local)

    def _wanted(self, acc: AccContext, response: SIPResponse) -> bool:
        """OpenSIPS should_acc_reply: failures only with "failed"; provisionals only with early_media
        and a body."""
        status = response.status
        if status >= 300 and not acc.mask.any("failed"):
            return False
        if not acc.mask.any(""):
            return False
        return status >= 200 or (self.early_media and len(response.body) > 0)

    def _record(self, acc: AccContext, request: SIPRequest, response: SIPResponse, *,
                local: bool = False) -> Record:
        """The record of `response` to `request`. A reply made here (`local`) has the request's To tag,
        as OpenSIPS's get_rpl_to() takes for a FAKED_REPLY: an unanswered INVITE's 408 has none."""
        try:
            to_tag = (request.to.tag if local else response.to.tag or request.to.tag) or ""
        except ParseError:
            to_tag = ""
        from_tag = request.from_.tag or ""
        if acc.upstream:
            from_tag, to_tag = to_tag, from_tag
        core = Core(request.method, from_tag, to_tag, request.call_id, str(response.status), response.reason)
        return Record(core, self.clock(), context=acc.called, created=acc.created, extras=dict(acc.extras))

    def _missed(self, acc: AccContext, request: SIPRequest, response: SIPResponse, *, local: bool) -> None:
        """The INVITE failed: one missed-call report per backend with "missed", then the flag is off
        (OpenSIPS on_missed: re-arm it in failure_route to report each attempt)."""
        record = self._record(acc, request, response, local=local)
        if acc.mask.on("log", "missed") and self.logging:
            self._emit_log(records.log_line(records.MISSED, record, self.log_names))
        if acc.mask.on("db", "missed"):
            self._emit_row(self.table_missed, "missed_calls", records.row(record, self.db_names, missed=True))
        self.n_missed.inc()
        acc.mask = acc.mask.without(AccMask(frozenset(p for p in acc.mask.pairs if p[1] == "missed")))

    def _keep_for_cdr(self, acc: AccContext, request: SIPRequest, response: SIPResponse) -> None:
        """The call is answered: what its CDR needs goes into its dialog (so a restart or the worker
        holding the dialog writes the same CDR), and the dialog is flagged."""
        if self.dialogs is None or acc.dlg_id is None:
            log.error("acc: call %s answered without its dialog: no CDR", request.call_id)
            return
        record = self._record(acc, request, response)
        data = {"mask": sorted(f"{b}:{f}" for b, f in acc.mask.pairs), "table": acc.table,
                "created": acc.created, "start": record.timestamp, "to_tag": record.core.to_tag,
                "from_tag": record.core.from_tag, "code": record.core.code, "reason": record.core.reason,
                "extras": acc.extras}
        self.dialogs.store_value(acc.dlg_id, DLG_VALUE, json.dumps(data, separators=(",", ":")))
        self.dialogs.set_flag(acc.dlg_id, DLG_FLAG_ACC_CDR)

    # --- the dialog's end: the CDR -------------------------------------------------------------------

    def _dialog_changed(self, dlg: Any, old: int, new: int, ctx: Any) -> None:
        if new is not DlgState.DELETED or old < DlgState.CONFIRMED_NA or not dlg.flags & DLG_FLAG_ACC_CDR:
            return
        try:
            data, mask = _cdr_data(dlg.values.get(DLG_VALUE))
        except (ValueError, TypeError, KeyError) as exc:
            log.error("acc: dialog %s (Call-ID %s): no CDR data (%s)", dlg.dlg_id, dlg.call_id, exc)
            return
        end = dlg.end if dlg.end is not None else self.clock()
        core = Core("INVITE", str(data.get("from_tag") or ""), str(data.get("to_tag") or ""), dlg.call_id,
                    str(data.get("code") or ""), str(data.get("reason") or ""))
        extras = data.get("extras") or {}
        record = Record(core, end, context=True, created=data.get("created"), start=data.get("start"),
                        end=end, extras={str(k): str(v) for k, v in extras.items()})
        if mask.on("log", "cdr") and self.logging:
            self._emit_log(records.cdr_line(record, self.log_names))
        if mask.on("db", "cdr"):
            self._emit_row(str(data.get("table") or self.table_acc), "acc",
                           records.row(record, self.db_names, cdr=True))
        self.n_cdr.inc()

    # --- output --------------------------------------------------------------------------------------

    def _emit_log(self, line: str) -> None:
        self.n_log.inc()
        acc_log.log(self.level, "%s", line)

    @property
    def logging(self) -> bool:
        """The ACC: lines reach a handler at log_level (else they are not even formatted)."""
        return acc_log.isEnabledFor(self.level)

    def _emit_row(self, table: str, like: str, values: dict[str, Any]) -> None:
        self.n_db.inc()
        self.writer.put(table, like, values)


def _cdr_data(text: str | None) -> tuple[dict[str, Any], AccMask]:
    """The dialog value _keep_for_cdr wrote, and its mask; ValueError when it is not one."""
    if not text:
        raise ValueError("the dialog holds no accounting data")
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("mask"), list):
        raise ValueError("the accounting data is not an object with a mask")
    pairs = frozenset((b, f) for b, _, f in (str(p).partition(":") for p in data["mask"]))
    return data, AccMask(pairs)
