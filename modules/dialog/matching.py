"""In-dialog requests: matched after loose_route() (rr's callback, by the Record-Route cookie then
Call-ID and tags, per dlg_match_mode) or by match_dialog(); the CSeq kept per side, the ACK of the 2xx
confirms, a BYE from either side ends the dialog; validate_dialog() judges the matched request."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from routescript.core.module import Arg, script_function
from routescript.script.context import REQUEST_ROUTE, MsgContext
from routescript.sip import ParseError, SIPRequest

from .api import DlgState
from .core import Dialog, DlgEvent
from .current import CSEQ_OK_KEY, DIR_KEY, DLG_KEY, current_dialog

if TYPE_CHECKING:
    from .module import DialogModule

log = logging.getLogger("routescript.dialog")

MATCH_MODES = {"DID_ONLY": 0, "DID_FALLBACK": 1, "DID_NONE": 2}


def _match_mode_fixup(value: Any) -> Any:
    if isinstance(value, str) and value.strip().upper() not in MATCH_MODES:
        raise ValueError(f"match_dialog mode {value!r}: expected DID_ONLY, DID_FALLBACK or DID_NONE")
    return value


class DialogMatching:
    """Finds the dialog of an in-dialog request and applies it, over the owner's table; every state
    change goes through the owner (DialogModule.changed)."""

    def __init__(self, owner: DialogModule) -> None:
        self.owner = owner

    def on_loose_route(self, ctx: MsgContext, params: str) -> None:
        if current_dialog(ctx) is None:
            self._match(ctx, self.owner.match_mode, params)

    @script_function("match_dialog", Arg("str", "dlg_match_mode", optional=True, fixup=_match_mode_fixup),
                     routes=(REQUEST_ROUTE,))
    def match_dialog(self, ctx: MsgContext, mode: str | None = None) -> int:
        if current_dialog(ctx) is not None:
            return 1
        default = self.owner.match_mode
        wanted = default if mode is None else MATCH_MODES.get(mode.strip().upper(), default)
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
            did = _param(params, self.owner.rr_param)
            if did is not None:
                dlg = self.owner.table.by_did(did)
                if dlg is not None and dlg.call_id == call_id and dlg.state is not DlgState.DELETED:
                    direction = "downstream" if from_tag == dlg.from_tag else "upstream"
                    found = (dlg, direction)
        if found is None and mode in (1, 2):
            found = self.owner.table.match(call_id, from_tag, to_tag)
        if found is None:
            return None
        dlg, direction = found
        ctx.extra[DLG_KEY] = dlg
        ctx.extra[DIR_KEY] = direction
        self._on_request(ctx, dlg, direction, msg.method, cseq)
        return dlg

    def _on_request(self, ctx: MsgContext, dlg: Dialog, direction: str, method: str, cseq: int) -> None:
        """A matched in-dialog request: CSeq kept per side, ACK confirms, BYE ends."""
        now = self.owner.clock()
        downstream = direction == "downstream"
        last = dlg.caller_cseq if downstream else dlg.callee_cseq
        if method == "ACK":
            ok = cseq == dlg.invite_cseq or cseq == last
            ctx.extra[CSEQ_OK_KEY] = ok
            if cseq == dlg.invite_cseq or dlg.state is DlgState.CONFIRMED:
                self.owner.changed(self.owner.table.event(dlg, DlgEvent.ACK, now), ctx)
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
            self.owner.writer.mark(dlg)
        else:
            log.info("dialog %s (Call-ID %s): %s with CSeq %d, not above %d", dlg.dlg_id, dlg.call_id,
                     method, cseq, last)
        if method == "BYE":
            reason = "bye-caller" if downstream else "bye-callee"
            if self.owner.table.is_bogus(dlg, DlgEvent.BYE):
                log.info("dialog %s (Call-ID %s): BYE in state %s: not a confirmed dialog", dlg.dlg_id,
                         dlg.call_id, dlg.state.name)
                return
            self.owner.changed(self.owner.table.event(dlg, DlgEvent.BYE, now, reason=reason), ctx)

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
