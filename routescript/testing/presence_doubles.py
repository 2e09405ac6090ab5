"""Test doubles for driving the presence service without sockets or a transaction layer: a manual clock,
the request context, a transaction layer that answers every request 200 from the loop, and the few
server methods presence calls. Used by the presence, presence MI, pua and workers tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from routescript.core.requests import RequestSender
from routescript.modules.presence.events import EventRegistry
from routescript.modules.presence_xml import PresenceXmlModule
from routescript.sip import SocketInfo, Source, build_reply, parse_message

__all__ = ["SOCK", "ManualClock", "PresenceCtx", "PresenceServer", "RecordingTransactions",
           "presence_registry", "sip_request"]

SOCK = SocketInfo("udp", "127.0.0.1", 5070)


class ManualClock:
    """A clock the test moves by setting `now` (seconds)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class PresenceCtx:
    """What the presence service reads of a MsgContext."""

    def __init__(self, msg: Any, source: Source | None) -> None:
        self.msg, self.source, self.transaction, self.replied = msg, source, None, False


class RecordingTransactions:
    """Requests sent (parsed back from their bytes, with their destinations), each answered from the loop -
    never inside the call, as the real layer - with `answer`, or `answer_for[Call-ID]`."""

    def __init__(self, answer: int = 200) -> None:
        self.sent: list[Any] = []
        self.destinations: list[Any] = []
        self.answer = answer
        self.answer_for: dict[str, int] = {}

    def send_request(self, req: Any, dest: Any, on_final: Callable[[Any], None],
                     branch: str | None = None) -> None:
        self.sent.append(parse_message(req.to_bytes()))
        self.destinations.append(dest)
        status = self.answer_for.get(req.call_id, self.answer)
        asyncio.get_running_loop().call_soon(on_final, build_reply(req, status))


class PresenceServer:
    """The server as the presence service uses it: its sockets, request sender (the core's, over
    RecordingTransactions), event bus, To tags (`tag_prefix` + Call-ID) and stateful replies (recorded;
    `on_reply` sees each one first)."""

    def __init__(self, *, tag_prefix: str = "313b-", events: Any = None) -> None:
        self.tag_prefix = tag_prefix
        self.replies: list[Any] = []
        self.sockets = [SOCK]
        self.transactions = RecordingTransactions()
        self.requests = RequestSender(self.transactions, self.sockets)
        self.events = events
        self.on_reply: Callable[[Any], None] | None = None

    def to_tag(self, msg: Any) -> str:
        return self.tag_prefix + str(msg.call_id)

    def reply(self, ctx: Any, code: int, reason: str | None = None, headers: Any = ()) -> Any:
        resp = build_reply(ctx.msg, code, reason, to_tag=self.to_tag(ctx.msg), headers=headers)
        if self.on_reply is not None:
            self.on_reply(resp)
        self.replies.append(resp)
        return resp


def presence_registry(force_active: int = 1, extra: Iterable[Any] = ()) -> EventRegistry:
    """An EventRegistry with presence_xml's events (presence, presence.winfo, ...) and `extra` events."""
    reg = EventRegistry()
    defaults = {p.name: p.default for p in PresenceXmlModule.params}
    for event in PresenceXmlModule(object(), defaults | {"force_active": force_active}).make_events():
        reg.add_event(event)
    for event in extra:
        reg.add_event(event)
    return reg


def sip_request(text: str, body: bytes = b"") -> Any:
    """A message parsed from `text` (one header per line, LF line ends) and `body`, Content-Length added."""
    head = text.strip().replace("\n", "\r\n") + f"\r\nContent-Length: {len(body)}\r\n\r\n"
    return parse_message(head.encode() + body)
