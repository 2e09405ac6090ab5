"""The asyncio side of the pua table: each PUBLISH the table decides is delivered - in-process to our own
presence module, or over SIP through the core's request sender - and its answer handed back.

Delivery (docs/modules/pua.md): in-process when presence is loaded and handles requests (db_url set) and
the publication names no outbound proxy, or one that is this server; otherwise a PUBLISH request to the
outbound proxy (a Route) or to the presentity URI, outside any dialog (RequestSender.send_to).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from routescript.sip import ParseError, parse_uri

from ._timer import run_timer
from .table import Follows, Op, PuaFull, PubKey, PubTable, Send, Sender

log = logging.getLogger("routescript.pua")

MAX_DELIVERIES = 10_000   # bound: PUBLISHes being delivered at once (one per publication at most)


class LocalPresence(Protocol):
    """What the pua needs from the presence module (PresenceModule.publish)."""

    async def publish(self, pres_uri: str, event: str, body: bytes | None, *, etag: str | None = None,
                      expires: int | None = None, content_type: str | None = None,
                      sender: str | None = None) -> Any: ...


class Publisher:
    """Owns the PubTable at run time: `publish` (sync: callable from dialog callbacks), delivery tasks,
    and the refresh timer (`run`)."""

    def __init__(self, table: PubTable, *, clock: Callable[[], float],
                 local: Callable[[str | None], LocalPresence | None],
                 send_sip: Callable[[Send, Callable[[int, dict[str, str]], None]], None] | None,
                 update_period: int = 30) -> None:
        self.table = table
        self._clock = clock
        self._local = local            # outbound proxy -> the in-process presence, or None
        self._send_sip = send_sip      # None: no request sender (no SIP delivery)
        self._update_period = max(1, update_period)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._etag_hooks: dict[PubKey, Callable[[str | None], None]] = {}   # bound: the table's records
        self.sent = 0                  # statistics: PUBLISHes delivered (both ways)
        self.failed = 0

    def publish(self, pres_uri: str, event: str, body: bytes | None, *, id: str = "",
                expires: int | None = None, content_type: str = "", outbound_proxy: str | None = None,
                etag: str | None = None, on_etag: Callable[[str | None], None] | None = None,
                sender: Sender | None = None, follows: Follows | None = None) -> bool:
        """Publish `body` for (pres_uri, event, id); expires 0 removes it. False when refused (logged).
        `etag`: the ETag kept from before a restart (PubTable.publish); `on_etag`: told each new ETag
        the compositor gives (None when the publication is gone), so its module can keep it."""
        key = PubKey(pres_uri, event, id)
        try:
            send = self.table.publish(key, body, self._clock(), expires=expires, content_type=content_type,
                                      outbound_proxy=outbound_proxy or None, etag=etag, sender=sender,
                                      follows=follows)
        except PuaFull as exc:
            log.error("pua: publication %s (%s) for %s refused: %s", id, event, pres_uri, exc)
            return False
        if on_etag is not None and self.table.get(key) is not None:
            self._etag_hooks[key] = on_etag
        if send is not None:
            self._deliver(send)
        return True

    def _deliver(self, send: Send) -> None:
        if len(self._tasks) >= MAX_DELIVERIES:
            log.error("pua: %d PUBLISHes in delivery; %s for %s dropped", len(self._tasks), send.op.value,
                      send.key.pres_uri)
            self.table.drop(send.key)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.table.drop(send.key)
            return
        task = loop.create_task(self._deliver_one(send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_one(self, send: Send) -> None:
        local = self._local(send.outbound_proxy)
        if local is not None:
            try:
                answer = await local.publish(send.key.pres_uri, send.key.event, send.body, etag=send.etag,
                                             expires=send.expires, content_type=send.content_type or None,
                                             sender=send.sender[1] if send.sender is not None else None)
            except Exception:
                log.exception("pua: in-process PUBLISH for %s failed", send.key.pres_uri)
                self._answer(send, 500, {})
                return
            status = 500 if answer is None else answer.status
            headers: dict[str, str] = {}
            if answer is not None and answer.etag:
                headers["sip-etag"] = answer.etag
            if answer is not None and answer.expires is not None:
                headers["expires"] = str(answer.expires)
            self._answer(send, status, headers)
            return
        if self._send_sip is None:
            log.error("pua: no presence module here and no request sender: %s for %s not sent",
                      send.op.value, send.key.pres_uri)
            self._answer(send, 500, {})
            return
        try:
            self._send_sip(send, lambda status, headers: self._answer(send, status, headers))
        except (ParseError, ValueError) as exc:
            log.error("pua: PUBLISH for %s not sent: %s", send.key.pres_uri, exc)
            self._answer(send, 400, {})

    def _answer(self, send: Send, status: int, headers: dict[str, str]) -> None:
        now = self._clock()
        if 200 <= status < 300:
            self.sent += 1
        else:
            self.failed += 1
            if status != 412 or send.op is Op.INITIAL:
                log.warning("pua: PUBLISH (%s) for %s event %s answered %d", send.op.value, send.key.pres_uri,
                            send.key.event, status)
        nxt = self.table.response(send, status, now, etag=headers.get("sip-etag"),
                                  expires=_int(headers.get("expires")),
                                  min_expires=_int(headers.get("min-expires")))
        if status == 412 and nxt is None and send.op is not Op.INITIAL and self.table.get(send.key) is None:
            log.warning("pua: PUBLISH (%s) for %s event %s answered 412 and its body is not known (read from "
                        "the pua table): forgotten until its publisher publishes it again", send.op.value,
                        send.key.pres_uri, send.key.event)
        hook = self._etag_hooks.get(send.key)
        if hook is not None:
            rec = self.table.get(send.key)
            if rec is None:
                del self._etag_hooks[send.key]
            try:
                hook(rec.etag if rec is not None and 200 <= status < 300 else None)
            except Exception:
                log.exception("pua: ETag hook of %s failed", send.key.pres_uri)
        if nxt is not None:
            self._deliver(nxt)
        self._wake.set()

    async def run(self) -> None:
        """The refresh timer: due() at the next deadline, at least every update_period seconds."""
        await run_timer(self._tick, self.table.next_deadline, self._clock, self._update_period, self._wake)

    def _tick(self) -> None:
        for send in self.table.due(self._clock()):
            self._deliver(send)
        for key in [k for k in self._etag_hooks if self.table.get(k) is None]:
            del self._etag_hooks[key]   # forgotten at their end

    async def drain(self) -> None:
        """Wait for the deliveries under way (tests, stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def publish_request(send: Send, *, from_tag: str | None = None, call_id: str | None = None,
                    local_host: str = "localhost") -> tuple[str, tuple[tuple[str, str], ...], bytes]:
    """(Request-URI, headers, body) of the PUBLISH for `send` (RFC 3903 4): To and From the presentity,
    Event, Expires, SIP-If-Match, Content-Type with a body; a Route to the outbound proxy (loose routing).
    Raises ParseError when the presentity is no URI."""
    uri = send.key.pres_uri
    parse_uri(uri)
    headers: list[tuple[str, str]] = []
    if send.outbound_proxy:
        proxy = send.outbound_proxy.strip().strip("<>")
        parse_uri(proxy)
        if ";lr" not in proxy:
            proxy += ";lr"
        headers.append(("Route", f"<{proxy}>"))
    headers += [("From", f"<{uri}>;tag={from_tag or secrets.token_hex(6)}"), ("To", f"<{uri}>"),
                ("Call-ID", call_id or f"{secrets.token_hex(10)}@{local_host}"), ("CSeq", "1 PUBLISH"),
                ("Event", send.key.event), ("Expires", str(send.expires))]
    if send.etag:
        headers.append(("SIP-If-Match", send.etag))
    if send.sender is not None:
        headers.append(send.sender)
    body = send.body or b""
    if body:
        headers.append(("Content-Type", send.content_type or "application/pidf+xml"))
    return uri, tuple(headers), body

