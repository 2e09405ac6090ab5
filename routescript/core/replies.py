"""Replies the core sends (the Replier): make_reply (to-tag, Server:, Record-Route), reply (through the
transaction or stateless), send_reply (sl_send_reply) and the 503 the overload checks send."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from routescript.script.context import MsgContext
from routescript.sip import SIPRequest, SIPResponse, Source, build_reply, generate_tag, name_addr_tag
from routescript.sip.assembled import assemble_trying

from .config import CoreConfig
from .layers import SipLayers
from .stats import CoreCounters

log = logging.getLogger("routescript.core")


class Replier:
    """The replies the core sends: make_reply, reply (through the transaction or stateless),
    send_reply (sl_send_reply) and reply_stateless (the 503s of the overload checks). Server exposes
    these bound methods as its own (server.reply is replier.reply: no call in between)."""

    def __init__(self, layers: SipLayers, counters: CoreCounters) -> None:
        self._layers = layers          # config, transport, transactions: read at each reply
        self._counters = counters
        # The Server header of the configuration generation last seen: decided once per config object
        # (load() installs a new one; nothing edits a loaded one's values after start).
        self._server_of: tuple[CoreConfig | None, str] = (None, "")

    def make_reply(self, msg: SIPRequest, code: int, reason: str | None = None, *,
                   headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                   content_type: str | None = None) -> SIPResponse:
        """A reply to `msg` with our to-tag when its To has none (stable per request, so a stateless
        retransmission gets the same reply) and `Server:` when server_header is set. A 18x/2xx reply
        carries the request's Record-Route lines, in order (RFC 3261 12.1.1; OpenSIPS copies them for
        180..299 to any request)."""
        return build_reply(msg, code, reason, make_to_tag=to_tag, headers=headers, body=body,
                           content_type=content_type, record_route=True, server=self._server_header())

    def _server_header(self) -> str:
        """The Server value core replies carry ('' for none): server_header unless server_signature
        is off, decided once per configuration generation."""
        config = self._layers.config
        seen, value = self._server_of
        if config is not seen:
            value = config.server_header if config.get("server_signature") else ""
            self._server_of = (config, value)
        return value

    def _reply_of(self, ctx: MsgContext, code: int, reason: str | None, headers: Iterable[tuple[str, str]],
                  body: bytes, content_type: str | None) -> tuple[SIPResponse, Source]:
        """The reply to ctx's request, with the headers the script added by append_to_reply()
        (ctx.reply_headers), and where the request came from."""
        request, source = ctx.msg, ctx.source
        if not isinstance(request, SIPRequest) or source is None:
            raise TypeError("a reply answers a received request")
        if ctx.reply_headers:
            headers = tuple(headers) + tuple(ctx.reply_headers)
        return self.make_reply(request, code, reason, headers=headers, body=body,
                               content_type=content_type), source

    def _trying_of(self, ctx: MsgContext) -> tuple[SIPResponse, Source]:
        """The plain 100 Trying of ctx's request (a proxy's, for every INVITE), written straight into
        its bytes - make_reply's, byte for byte - when nothing reads it at once: its transaction keeps
        it for a retransmitted INVITE, and its head is parsed back only if something asks
        (assemble_trying). A reply hook (dialog, acc) would read it at once: make_reply then."""
        request, source = ctx.msg, ctx.source
        if not isinstance(request, SIPRequest) or source is None:
            raise TypeError("a reply answers a received request")
        return assemble_trying(request, self._server_header()), source

    def reply(self, ctx: MsgContext, code: int, reason: str | None = None, *,
              headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
              content_type: str | None = None) -> SIPResponse:
        """Reply to ctx.msg: through its server transaction when one exists (t_newtran), else stateless.
        Headers the script added with append_to_reply() (ctx.reply_headers) go in every reply."""
        transaction = ctx.transaction
        if code == 100 and transaction is not None and not transaction.reply_hooks \
                and (reason is None or reason == "Trying") and headers == () and not body \
                and content_type is None and not ctx.reply_headers:
            resp, source = self._trying_of(ctx)
        else:
            resp, source = self._reply_of(ctx, code, reason, headers, body, content_type)
        if transaction is not None:
            transactions = self._layers.transactions
            assert transactions is not None, "a transaction without the transaction layer"
            transactions.reply(transaction, resp)
        else:
            transport = self._layers.transport
            assert transport is not None, "a reply before start()"
            transport.send_reply(resp, source)
            self._counters.count_sl_reply(code, _is_error_reply(ctx))
        if code >= 200:
            ctx.replied = True
        return resp

    def send_reply(self, ctx: MsgContext, code: int, reason: str | None = None, *,
                   headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                   content_type: str | None = None) -> SIPResponse:
        """A stateless reply (sl_send_reply), even when a transaction exists."""
        resp, source = self._reply_of(ctx, code, reason, headers, body, content_type)
        transport = self._layers.transport
        assert transport is not None, "a reply before start()"
        transport.send_reply(resp, source)
        self._counters.count_sl_reply(code, _is_error_reply(ctx))
        if code >= 200:
            ctx.replied = True
        return resp

    def reply_stateless(self, msg: SIPRequest, source: Source, code: int, reason: str,
                        headers: Iterable[tuple[str, str]] = ()) -> None:
        """A reply the core sends on its own (503 when overloaded or stopping); a failure is logged."""
        try:
            transport = self._layers.transport
            assert transport is not None, "a reply before start()"
            transport.send_reply(self.make_reply(msg, code, reason, headers=headers), source)
        except Exception:
            log.exception("could not send %d", code)


def to_tag(msg: SIPRequest) -> str:
    """OpenSIPS's sl makes its to-tag from the request; so do we (Call-ID, From tag, top branch).

    The one place our to-tag is made; a worker process's carries its slot and epoch (set_tag_prefix), so
    the dialog's in-dialog requests come back to it (docs/workers.md 2, rule 2). A pure function of
    the request, asked twice for a new dialog (presence's subscription, then its reply): the last
    request's tag is kept, so the second ask costs nothing."""
    last, tag = _last_tagged[0]
    if last is msg:
        return tag
    try:
        text = f"{msg.call_id or ''}\x00{_from_tag(msg)}\x00{msg.via.branch or ''}"
    except Exception:  # noqa: BLE001 - the slow way: a broken header gives an empty part
        parts = []
        getters: tuple[Callable[[], object], ...] = (lambda: msg.call_id, lambda: msg.from_.tag,
                                                     lambda: msg.via.branch)
        for get in getters:
            try:
                parts.append(str(get() or ""))
            except Exception:  # noqa: BLE001 - a broken header gives an empty part: still a tag
                parts.append("")
        text = "\x00".join(parts)
    tag = _tag_prefix[0] + hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
    _last_tagged[0] = (msg, tag)
    return tag


# "rs." in one process; "<slot>.<epoch>.rs." in a worker (routescript.workers.dispatch.slot_tag's form)
_tag_prefix = ["rs."]


def new_local_tag() -> str:
    """A fresh random From tag for a dialog this server starts as a UAC (pua's SUBSCRIBEs): in a worker it
    names the worker's slot and epoch, so the other side's in-dialog requests (a NOTIFY, with this tag
    in its To) are dispatched back to the worker holding the dialog (docs/workers.md 2, rule 2)."""
    return _tag_prefix[0] + generate_tag()


def set_tag_prefix(prefix: str) -> None:
    """In a worker process: every to-tag made from now on starts with `prefix` (its slot and epoch)."""
    _tag_prefix[0] = prefix
    _last_tagged[0] = (None, "")


# to_tag's last request and its tag (one slot, replaced in place)
_last_tagged: list[tuple[SIPRequest | None, str]] = [(None, "")]


# tag-param = "tag" EQUAL token (RFC 3261 20.20), among the From params: after the ">" of a name-addr,
# anywhere in an addr-spec (whose ";" params are header params).
def _from_tag(msg: SIPRequest) -> str:
    """The From tag, read by the SIP layer without parsing the whole name-addr (name_addr_tag)."""
    value = msg.header("from")
    if value is None:
        raise ValueError("no From")
    return name_addr_tag(value)


def _is_error_reply(ctx: MsgContext) -> bool:
    """sl's sent_err_replies: a reply sent for an error met while handling the message (what
    sl_reply_error answers: a failed core step's ctx.extra["sl_error"], or the peer's bad header)."""
    return "sl_error" in ctx.extra or ctx.failure is not None or ctx.error is not None


def _with_reply_headers(ctx: MsgContext, kw: dict[str, Any]) -> dict[str, Any]:
    """make_reply's keyword arguments (of several types: hence Any) with ctx.reply_headers added."""
    if not ctx.reply_headers:
        return kw
    kw = dict(kw)
    kw["headers"] = tuple(kw.get("headers", ())) + tuple(ctx.reply_headers)
    return kw
