"""Running a message through the script: requests and responses to their routes, and what a failure
becomes (400 or the error's status, error_route, 500); the route helpers the other parts use."""

from __future__ import annotations

import logging
from typing import Any

from routescript.script.context import ERROR_ROUTE, EVENT_ROUTE, ONREPLY_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.script.runtime import DROP_KEY
from routescript.sip import ParseError, SIPRequest

from ._server_base import ServerBase
from .log import current_call_id

log = logging.getLogger("routescript.core")


class DispatchMixin(ServerBase):
    """Server.handle_message and the routes it runs."""

    async def handle_message(self, msg: Any, source: Any, arrived: float | None = None) -> None:
        """Dispatch one parsed message (also the entry point tests use without sockets). `arrived`:
        when the transport handed it over (time.monotonic), to answer 503 when it waited too long."""
        try:
            cid = msg.call_id
        except ParseError:
            cid = None
        token = current_call_id.set(cid)
        try:
            async with self._running:
                if arrived is not None and self._too_late(msg, source, arrived):
                    return
                if msg.is_request:
                    await self._handle_request(msg, source)
                else:
                    await self._handle_response(msg, source)
        except Exception:
            log.exception("unexpected failure handling a message")
        finally:
            current_call_id.reset(token)

    async def _handle_response(self, msg: Any, source: Any) -> None:
        if self.transactions is not None and self.transactions.on_response(msg, source):
            return
        if self._has_route(ONREPLY_ROUTE, None):
            ctx = MsgContext(msg=msg, source=source, server=self, route_type=ONREPLY_ROUTE,
                             reply_code=getattr(msg, "status", None))
            try:
                await self._run_route(ONREPLY_ROUTE, None, ctx)
            except Exception as exc:
                log.error("onreply_route failed%s", _where(exc), exc_info=not _has_pos(exc))
        else:
            log.debug("response %s matched no transaction; dropped", getattr(msg, "status", "?"))

    async def _handle_request(self, msg: Any, source: Any) -> None:
        from routescript.sip import ParseError

        script = self.script  # fixed for this message even if a reload swaps it meanwhile
        ctx = MsgContext(msg=msg, source=source, server=self, route_type=REQUEST_ROUTE)
        try:
            if self.transactions is not None and self.transactions.lookup(msg, source) is not None:
                return  # a retransmission: the transaction layer has resent the last reply itself
        except ParseError as exc:  # a Via too broken to match transactions on
            await self._on_bad_message(ctx, exc, script)
            return
        if msg.method == "ACK" and _acks_our_stateless_reply(msg):
            self.counters.received_ACKs += 1  # sl's statistic; the script still sees the ACK
        # The compiled route never raises: what a function call, pseudo-variable or statement raised is
        # logged there with its file:line:col and recorded on the context (ctx.failure) for us.
        await self._run_route(REQUEST_ROUTE, None, ctx, script)
        if ctx.replied or msg.method == "ACK" or ctx.extra.get(DROP_KEY):
            return
        failure = ctx.failure
        if failure is None:
            return
        if isinstance(failure, ParseError):
            # the script met a bad header and ended without replying: its status + reason, or error_route
            await self._on_bad_message(ctx, failure, script)
        elif not isinstance(failure, (ValueError, TypeError)):  # a bad script value is only logged
            try:
                self.reply(ctx, 500, "Server Internal Error")
            except Exception:
                log.exception("could not send 500")

    async def _on_bad_message(self, ctx: MsgContext, exc: Any, script: Any) -> None:
        """The script touched a header the peer got wrong: error_route when the script has one, else
        the error's own status and reason (400 by default), as OpenSIPS's core does."""
        log.warning("bad message: %s", exc.reason)
        if "URI" in str(getattr(exc, "reason", "")):
            self.counters.bad_URIs_rcvd += 1
        else:
            self.counters.bad_msg_hdr += 1
        has_error_route = self._has_route(ERROR_ROUTE, None, script)
        if has_error_route:
            ctx.route_type = ERROR_ROUTE
            ctx.error = exc
            try:
                await script.run(ERROR_ROUTE, None, ctx)
            except Exception as exc2:
                log.error("error_route failed%s: %s", _where(exc2), exc2, exc_info=not _has_pos(exc2))
            return
        if not ctx.replied and not (isinstance(ctx.msg, SIPRequest) and ctx.msg.method == "ACK"):
            try:
                self.reply(ctx, exc.status, exc.reason)
            except Exception as exc2:  # noqa: BLE001 - the headers a reply copies are broken too
                log.warning("cannot answer the bad message (%s): %s", exc.reason, exc2)

    # ------------------------------------------------------------------ routes
    def _has_route(self, kind: str, name: str | None, script: Any = None) -> bool:
        return bool((script or self.script).has(kind, name))

    async def _run_route(self, kind: str, name: str | None, ctx: MsgContext, script: Any = None) -> int:
        script = script or self.script
        return int(await script.run(kind, name, ctx) or 0)

    def _has_event_route(self, name: str) -> bool:
        return self.script is not None and self._has_route(EVENT_ROUTE, name)

    async def _run_event_route(self, name: str, ctx: MsgContext) -> bool:
        if not self._has_route(EVENT_ROUTE, name):
            return False
        await self._run_route(EVENT_ROUTE, name, ctx)
        return True


def _acks_our_stateless_reply(msg: Any) -> bool:
    """An ACK whose To tag is one our stateless replies carry (Server.to_tag's "rs." prefix)."""
    try:
        tag = msg.to.tag
    except Exception:  # noqa: BLE001 - a broken To header: not ours to count
        return False
    return bool(tag) and str(tag).startswith("rs.")


def _has_pos(exc: BaseException) -> bool:
    return getattr(exc, "pos", None) is not None


def _where(exc: BaseException) -> str:
    pos = getattr(exc, "pos", None)
    if pos:
        try:
            return f" at {pos[0]}:{pos[1]}:{pos[2]}"
        except (TypeError, IndexError):
            return f" at {pos}"
    return ""
