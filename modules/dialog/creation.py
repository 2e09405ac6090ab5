"""A dialog made: create_dialog() on the initial INVITE (the dialog, its server transaction, the
Record-Route cookie, DLGCB_CREATED) and the replies of that INVITE as they go upstream (the transaction's
reply hook, OpenSIPS's TMCB_RESPONSE_OUT): a 1xx with a To tag -> early, a 2xx -> confirmed (not ACKed),
a final failure -> deleted; the callee's tag, Contact and route set learnt on the way."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from routescript.core.module import Arg, script_function
from routescript.script.context import REQUEST_ROUTE, MsgContext
from routescript.sip import ParseError, SIPRequest, SIPResponse

from .api import DlgState
from .core import Dialog, DialogLimitError, DlgEvent, parse_create_flags
from .current import DLG_KEY, current_dialog

if TYPE_CHECKING:
    from .module import DialogModule

log = logging.getLogger("routescript.dialog")

UNCONFIRMED_GUARD = 300.0     # seconds an unconfirmed/early dialog may wait for its final reply


def _create_flags_fixup(value: Any) -> Any:
    if isinstance(value, str):
        parse_create_flags(value)   # ValueError at load for an unknown or unbuilt flag
    return value


class DialogCreation:
    """create_dialog() and the initial INVITE's replies, over the owner's table; every state change goes
    through the owner (DialogModule.changed)."""

    def __init__(self, owner: DialogModule) -> None:
        self.owner = owner

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
        owner = self.owner
        now = owner.clock()
        try:
            dlg = owner.table.create(call_id=msg.call_id, from_uri=str(msg.from_.uri), from_tag=from_tag,
                                     to_uri=str(msg.to.uri), req_uri=msg.ruri,
                                     from_header=msg.header("from") or "", to_header=msg.header("to") or "",
                                     now=now, timeout=owner.default_timeout)
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
        owner.processed.inc()
        hooks = transaction.reply_hooks
        if hooks is None:
            hooks = transaction.reply_hooks = []
        hooks.append(lambda response: self._on_reply(dlg, response))
        if owner.match_mode != 2:
            self._add_did(ctx, dlg)
        info = dlg.info()
        for cb in list(owner.callbacks.created):
            try:
                cb(info, ctx)
            except Exception:
                log.exception("dialog %s (Call-ID %s): a created callback failed", dlg.dlg_id, dlg.call_id)
        owner.rearm()
        return 1

    def _unconfirmed_guard(self) -> float:
        """How long an INVITE may wait for its final reply: UNCONFIRMED_GUARD, or tm's fr_inv_timeout and
        a minute when that is longer."""
        tm: Any = self.owner.server.modules.get("tm")
        settings = getattr(tm, "settings", None)
        fr_inv = float(getattr(settings, "fr_inv_timeout", 0) or 0)
        return max(UNCONFIRMED_GUARD, fr_inv + 60.0)

    def _add_did(self, ctx: MsgContext, dlg: Dialog) -> None:
        rr: Any = self.owner.server.modules.get("rr")
        if rr is None:
            return
        try:
            rr.add_rr_param(ctx, f";{self.owner.rr_param}={dlg.did}")
        except Exception:
            log.exception("create_dialog: the Record-Route cookie was not added (Call-ID %s)", dlg.call_id)

    def _on_reply(self, dlg: Dialog, response: SIPResponse) -> None:
        """A reply of the initial INVITE went upstream (the transaction's reply hook)."""
        if dlg.state is DlgState.DELETED:
            return
        status = response.status
        now = self.owner.clock()
        try:
            to_tag = response.to.tag
        except ParseError:
            to_tag = None
        if status < 200:
            if not to_tag:
                return
            self._learn_callee(dlg, response, to_tag)
            self.owner.changed(self.owner.table.event(dlg, DlgEvent.RPL1XX, now), None)
        elif status < 300:
            if not to_tag:
                log.warning("dialog %s (Call-ID %s): a 2xx without To tag", dlg.dlg_id, dlg.call_id)
                return
            if dlg.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED):
                return    # a retransmission, or a second branch's 2xx: the first one made the dialog
            self._learn_callee(dlg, response, to_tag)
            self.owner.changed(self.owner.table.event(dlg, DlgEvent.RPL2XX, now), None)
        else:
            reason = "cancelled" if status == 487 else f"failed:{status}"
            self.owner.changed(self.owner.table.event(dlg, DlgEvent.RPLFAIL, now, reason=reason), None)

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
            return bool(self.owner.server.is_myself(uri.host, uri.port))
        except (ParseError, ValueError, AttributeError):
            return False
