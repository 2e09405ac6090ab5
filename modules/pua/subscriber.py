"""The asyncio side of the subscription table: each SUBSCRIBE the table decides goes out through the core's
request sender (the initial one outside any dialog, to its outbound proxy or the presentity URI; the
others inside the dialog), and its final answer is handed back; a timer sends the refreshes.

The From tag of every subscription names this worker (routescript.core.replies.new_local_tag), so the
NOTIFYs the notifier sends back reach the worker holding the subscription.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

from routescript.core.replies import new_local_tag
from routescript.core.requests import OutgoingRequest, dialog_route
from routescript.sip import ParseError, parse_uri

from ._timer import run_timer
from .publisher import _int
from .subscriptions import SubKey, SubSend, SubsFull, SubTable

log = logging.getLogger("routescript.pua")

SendRequest = Callable[[SubSend, OutgoingRequest, Callable[[Any], None]], None]


class Subscriber:
    """Owns the SubTable at run time: `subscribe` (sync: callable from usrloc callbacks), `is_dialog`,
    the sends and the refresh timer (`run`)."""

    def __init__(self, table: SubTable, *, clock: Callable[[], float], send: SendRequest | None,
                 update_period: int = 30) -> None:
        self.table = table
        self._clock = clock
        self._send = send              # None: no request sender yet (library mode)
        self._update_period = max(1, update_period)
        self._wake = asyncio.Event()
        self.sent = 0
        self.failed = 0

    def subscribe(self, pres_uri: str, watcher_uri: str, event: str, expires: int, *, to_uri: str,
                  contact: str, outbound_proxy: str | None = None) -> bool:
        """OpenSIPS pua send_subscribe: watch `pres_uri` as `watcher_uri` for `expires` seconds (0:
        unsubscribe). False when refused (logged)."""
        key = SubKey(pres_uri, watcher_uri, event)
        call_id = secrets.token_hex(12)   # RFC 3261 20.8: the word alone is a Call-ID
        try:
            send = self.table.subscribe(key, self._clock(), expires, to_uri=to_uri, contact=contact,
                                        call_id=call_id, from_tag=new_local_tag(),
                                        outbound_proxy=outbound_proxy or None)
        except SubsFull as exc:
            log.error("pua: SUBSCRIBE (%s) of %s for %s refused: %s", event, watcher_uri, pres_uri, exc)
            return False
        if send is not None:
            self._deliver(send)
        self._wake.set()
        return True

    def is_dialog(self, call_id: str, our_tag: str, their_tag: str, *, terminated: bool = False) -> bool:
        """OpenSIPS pua is_dialog: does a NOTIFY (this Call-ID, our tag in its To, theirs in its From)
        belong to one of our subscriptions? `terminated` ends that subscription."""
        return self.table.notify(call_id, our_tag, their_tag, terminated=terminated) is not None

    def _deliver(self, send: SubSend) -> None:
        if self._send is None:
            log.error("pua: no request sender: SUBSCRIBE for %s not sent", send.key.pres_uri)
            self.table.response(send, 500, self._clock())
            return
        try:
            request = subscribe_request(send)
            self._send(send, request, lambda response: self._answer(send, response))
        except (ParseError, ValueError) as exc:
            log.error("pua: SUBSCRIBE for %s not sent: %s", send.key.pres_uri, exc)
            self.failed += 1
            self.table.response(send, 400, self._clock())

    def _answer(self, send: SubSend, response: Any) -> None:
        status = response.status
        if 200 <= status < 300:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("pua: SUBSCRIBE (%s) of %s for %s answered %d", send.key.event, send.key.watcher_uri,
                        send.key.pres_uri, status)
        fields: dict[str, Any] = {}
        if 200 <= status < 300:
            try:
                to_tag = response.to.tag
                contacts = [c for c in response.contacts if not c.star and c.uri is not None]
                record_route = tuple(response.header_values("Record-Route"))
            except ParseError as exc:
                log.warning("pua: 2xx to the SUBSCRIBE for %s unreadable: %s", send.key.pres_uri, exc)
                status, to_tag, contacts, record_route = 400, None, [], ()
            fields = {"to_tag": to_tag, "contact": str(contacts[0].uri) if contacts else None,
                      "record_route": record_route}
        nxt = self.table.response(send, status, self._clock(), expires=_int(response.header("Expires")),
                                  min_expires=_int(response.header("Min-Expires")), **fields)
        if nxt is not None:
            self._deliver(nxt)
        self._wake.set()

    async def run(self) -> None:
        """The refresh timer: due() at the next deadline, at least every update_period seconds."""
        await run_timer(self._tick, self.table.next_deadline, self._clock, self._update_period, self._wake)

    def _tick(self) -> None:
        for send in self.table.due(self._clock()):
            self._deliver(send)


def subscribe_request(send: SubSend) -> OutgoingRequest:
    """The SUBSCRIBE for `send` (RFC 6665 4.1.2): the initial one to the presentity URI, From the watcher
    with our tag, To `to_uri`; a refresh or unsubscribe to the remote target through the route set, with
    the notifier's To tag. Raises ParseError when a URI does not parse."""
    for uri in (send.key.pres_uri, send.key.watcher_uri, send.to_uri, send.contact):
        parse_uri(uri)
    to = f"<{send.to_uri}>" + (f";tag={send.to_tag}" if send.to_tag else "")
    routes: list[str] = []
    ruri = send.key.pres_uri
    if send.to_tag is not None:
        ruri, routes = dialog_route(send.remote_target or send.key.pres_uri, send.route_set)
    headers = [("Route", r) for r in routes]
    headers += [("From", f"<{send.key.watcher_uri}>;tag={send.from_tag}"), ("To", to),
                ("Call-ID", send.call_id), ("CSeq", f"{send.cseq} SUBSCRIBE"), ("Event", send.key.event),
                ("Expires", str(send.expires)), ("Contact", f"<{send.contact}>")]
    return OutgoingRequest("SUBSCRIBE", ruri, tuple(headers))
