"""The scenario's user agents: each builds the requests its steps send, keeps its dialogs, queues what
it receives for `expect` steps and answers requests by its rules, the way a phone would.

A UA is wire-agnostic: it hands bytes to a `Wire` (the simulated network in process, a UDP socket with
--target) and is handed bytes back through `on_data`. Behaviour a phone has without being told:
  - the ACK for an error reply to its INVITE (RFC 3261 17.1.1.3: same branch, the reply's To);
  - a retransmitted request is not queued again; the answer it had is sent again (a server
    transaction's job), a retransmitted reply is absorbed (and an error reply to an INVITE ACKed again);
  - CANCEL: 200 for the CANCEL, 487 for the INVITE if it had no final answer yet (RFC 3261 9.2);
  - default answers: 200 to NOTIFY, BYE, MESSAGE, OPTIONS, INFO, UPDATE, PRACK; nothing to an INVITE
    (the scenario says how: `answer: {INVITE: [180, 200]}` or an `answer` step).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from routescript.sip import (
    ParseError,
    SIPRequest,
    SIPResponse,
    build_reply,
    build_request,
    generate_branch,
    generate_tag,
    parse_message,
)

from .model import Answer, Send, UASpec, substitute

log = logging.getLogger("routescript.testing.scenario")

DEFAULT_ANSWERS: dict[str, tuple[Answer, ...]] = {
    m: (Answer(200),) for m in ("NOTIFY", "BYE", "MESSAGE", "OPTIONS", "INFO", "UPDATE", "PRACK")}
# Requests that carry a Contact (they create or refresh a dialog's target).
_CONTACT_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REGISTER", "NOTIFY", "REFER", "UPDATE"})
# Content-Type of a body, by the Event package it goes with (else by method).
_BODY_TYPES = {"presence": "application/pidf+xml", "dialog": "application/dialog-info+xml",
               "message-summary": "application/simple-message-summary", "INVITE": "application/sdp",
               "MESSAGE": "text/plain"}
_call_ids = itertools.count(1)


class Wire(Protocol):
    def send(self, ua: UserAgent, data: bytes) -> None: ...

    def later(self, delay: float, fn: Callable[[], None]) -> None: ...

    def now(self) -> float: ...


@dataclass(slots=True)
class DialogState:
    """RFC 3261 12: what a UA keeps of a dialog to send requests inside it."""
    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    remote_tag: str | None = None
    remote_target: str | None = None
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    invite_cseq: int | None = None     # the INVITE the next ACK acknowledges
    confirmed: bool = False            # a 2xx (or the request that made it, on the called side)


@dataclass(slots=True)
class Received:
    message: SIPRequest | SIPResponse
    at: float                          # the (virtual) time it arrived
    answered: bool = False


class UserAgent:
    """One named UA of a scenario (module docstring)."""

    def __init__(self, spec: UASpec, wire: Wire, server_host: str) -> None:
        self.name = spec.name
        self.host, self.port, self.transport = spec.host, spec.port, spec.transport
        self.uri = spec.uri or f"sip:{spec.name}@{server_host}"
        self.answers = {**DEFAULT_ANSWERS, **spec.answers}
        self.password = spec.password
        self._contact = spec.contact
        self._sent_by = spec.sent_by
        self.username = spec.username or (self.uri.split(":", 1)[1].split("@", 1)[0] if "@" in self.uri
                                          else spec.name)
        self._authenticated: set[str] = set()          # branches of requests sent with credentials
        self.wire = wire
        self.requests: deque[Received] = deque()       # received, not yet taken by an expect step
        self.replies: deque[Received] = deque()
        self.unanswered: deque[SIPRequest] = deque()   # received requests no rule answered
        self.dialogs: dict[str, DialogState] = {}
        self.variables: dict[str, str] = {}            # shared by the scenario (set by the runner)
        self._sent: dict[str, SIPRequest] = {}         # by branch: for ACKs and CANCEL matching
        self._answered: dict[tuple[str, str], bytes] = {}   # (branch, method) -> the last answer sent
        self._finals: dict[str, int] = {}              # INVITE branch -> its final status, when sent
        self._invites: dict[str, SIPRequest] = {}      # INVITEs received, by branch (for CANCEL)
        self._replies_seen: set[tuple[str, int, str, str]] = set()
        self._seen: set[tuple[str, str]] = set()          # (branch, method) of requests received
        self._tags: dict[str, str] = {}                # Call-ID -> our To tag as a UAS
        self.retransmissions = 0

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def contact(self) -> str:
        """The `contact:` given, else user@address with ;transport= for all but UDP (RFC 3261 19.1.1;
        RFC 7118 5.2 for ws)."""
        if self._contact is not None:
            return self._contact
        user = self.uri.split(":", 1)[1].split("@", 1)[0] if "@" in self.uri else self.name
        suffix = f";transport={self.transport}" if self.transport != "udp" else ""
        return f"sip:{user}@{self.hostport}{suffix}"

    # --- sending --------------------------------------------------------------------------------

    def send_step(self, step: Send, server_uri: str) -> SIPRequest | None:
        """Build and send what a `send` step says; the request (None for raw text that is not one)."""
        v = self.variables
        if step.raw is not None:
            data = _raw_bytes(substitute(step.raw, v))
            self.wire.send(self, data)
            try:
                msg = parse_message(data)
            except ParseError:
                return None
            if isinstance(msg, SIPRequest):
                self._remember(msg)
                return msg
            return None
        assert step.method is not None
        method = step.method
        dialog = self.dialogs.get(step.dialog) if step.dialog else None
        if dialog is not None and dialog.remote_tag is None and method != "CANCEL":
            dialog = None if method != "ACK" else dialog
        headers = [(n, substitute(val, v) if val is not None else None) for n, val in step.headers]
        body = substitute(step.body, v).encode() if step.body is not None else b""
        if method == "CANCEL":
            req = self._cancel(step, server_uri)
        elif dialog is not None:
            req = self._in_dialog(method, dialog, step, headers, body)
        else:
            req = self._new(method, step, headers, body)
        self._remember(req)
        self.wire.send(self, req.to_bytes())
        return req

    def _new(self, method: str, step: Send, headers: list[tuple[str, str | None]], body: bytes) -> SIPRequest:
        v = self.variables
        ruri = substitute(step.ruri or "", v)
        to = substitute(step.to or ruri, v)
        call_id = f"rstest-{next(_call_ids)}-{generate_tag()}"
        tag = generate_tag()
        base = [("Via", self._via()), ("Max-Forwards", "70"), ("From", f"<{self.uri}>;tag={tag}"),
                ("To", f"<{to}>"), ("Call-ID", call_id), ("CSeq", f"1 {method}")]
        if method in _CONTACT_METHODS:
            base.append(("Contact", f"<{self.contact}>"))
        if step.dialog:
            self.dialogs[step.dialog] = DialogState(call_id, tag, self.uri, to, local_cseq=1,
                                                    invite_cseq=1 if method == "INVITE" else None)
        return self._build(method, ruri, base, headers, body, step.content_type)

    def _in_dialog(self, method: str, d: DialogState, step: Send, headers: list[tuple[str, str | None]],
                   body: bytes) -> SIPRequest:
        if method == "ACK":
            cseq = d.invite_cseq or d.local_cseq
        else:
            d.local_cseq += 1
            cseq = d.local_cseq
            if method == "INVITE":
                d.invite_cseq = cseq
        target = substitute(step.ruri, self.variables) if step.ruri else (d.remote_target or d.remote_uri)
        base = [("Via", self._via()), ("Max-Forwards", "70")]
        base += [("Route", r) for r in d.route_set]
        base += [("From", f"<{d.local_uri}>;tag={d.local_tag}"),
                 ("To", f"<{d.remote_uri}>" + (f";tag={d.remote_tag}" if d.remote_tag else "")),
                 ("Call-ID", d.call_id), ("CSeq", f"{cseq} {method}")]
        if method in _CONTACT_METHODS:
            base.append(("Contact", f"<{self.contact}>"))
        return self._build(method, target, base, headers, body, step.content_type)

    def _cancel(self, step: Send, server_uri: str) -> SIPRequest:
        """CANCEL of this UA's last INVITE (of the step's dialog when named): RFC 3261 9.1, same branch,
        Request-URI, Call-ID, From, To and CSeq number as the INVITE."""
        invite = None
        call_id = self.dialogs[step.dialog].call_id if step.dialog and step.dialog in self.dialogs else None
        for req in reversed(self._sent.values()):
            if req.method == "INVITE" and (call_id is None or req.call_id == call_id):
                invite = req
                break
        if invite is None:
            raise RuntimeError(f"{self.name} has no INVITE to cancel")
        hdrs = [("Via", invite.header_all("Via")[0]), ("Max-Forwards", "70"),
                ("From", invite.header("From") or ""), ("To", invite.header("To") or ""),
                ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.number} CANCEL")]
        hdrs += [("Route", r) for r in invite.header_all("Route")]
        return build_request("CANCEL", invite.ruri, hdrs)

    def _build(self, method: str, ruri: str, base: list[tuple[str, str]], extra: list[tuple[str, str | None]],
               body: bytes, content_type: str | None) -> SIPRequest:
        replaced = {n.lower() for n, _ in extra}
        hdrs = [(n, val) for n, val in base if n.lower() not in replaced]
        hdrs += [(n, val) for n, val in extra if val is not None]
        if body and content_type is None and not any(n.lower() in ("content-type", "c") for n, _ in hdrs):
            event = next((val.split(";")[0].strip() for n, val in hdrs if n.lower() in ("event", "o")), None)
            content_type = _BODY_TYPES.get(event or "", _BODY_TYPES.get(method, "text/plain"))
        return build_request(method, ruri, hdrs, body, content_type=content_type)

    def _via(self) -> str:
        # RFC 7118 5.2: "SIP/2.0/WS" (a browser's sent-by is an invented .invalid host: `sent_by:`)
        sent_by = self._sent_by or self.hostport
        return f"SIP/2.0/{self.transport.upper()} {sent_by};branch={generate_branch()};rport"

    def _remember(self, req: SIPRequest) -> None:
        try:
            self._sent[req.via.branch or ""] = req
        except ParseError:
            pass

    # --- receiving ------------------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        msg: SIPRequest | SIPResponse | None = None
        try:
            msg = parse_message(data)
            if isinstance(msg, SIPRequest):
                self._on_request(msg)
            else:
                self._on_reply(msg)
        except ParseError as exc:
            # A reply to a broken request may copy the broken header (400 Bad CSeq): queued as it is,
            # with no transaction matching, for the scenario to expect.
            if not data.startswith(b"SIP/2.0 ") or not isinstance(msg, SIPResponse):
                log.warning("%s received a message it cannot parse (%s): %r", self.name, exc, data[:200])
                return
            self.replies.append(Received(msg, self.wire.now()))

    def _on_reply(self, resp: SIPResponse) -> None:
        branch = resp.via.branch or ""
        key = (branch, resp.status, resp.to.tag or "", resp.cseq.method)
        sent = self._sent.get(branch)
        if key in self._replies_seen:
            self.retransmissions += 1
            if sent is not None and sent.method == "INVITE" and resp.status >= 300:
                self._ack_error(sent, resp)
            return
        self._replies_seen.add(key)
        if sent is not None and sent.method == "INVITE" and resp.status >= 300:
            self._ack_error(sent, resp)
        if sent is not None and resp.status in (401, 407) and self.password is not None \
                and branch not in self._authenticated:
            self._resend_with_credentials(sent, resp)
            return
        self._update_dialog_from_reply(resp)
        self.replies.append(Received(resp, self.wire.now()))

    def _on_request(self, req: SIPRequest) -> None:
        branch = req.via.branch or ""
        key = (branch, req.method)
        if key in self._seen:
            self.retransmissions += 1
            if self._answered.get(key):
                self.wire.send(self, self._answered[key])
            return
        self._seen.add(key)
        if req.method == "ACK":
            self.requests.append(Received(req, self.wire.now(), answered=True))
            return
        if req.method == "CANCEL":
            self._send_answer(req, Answer(200))
            invite = self._invites.get(branch)
            if invite is not None and branch not in self._finals:
                self._send_answer(invite, Answer(487))
            self.requests.append(Received(req, self.wire.now(), answered=True))
            return
        self._update_dialog_from_request(req)
        if req.method == "INVITE":
            self._invites[branch] = req
        rules = self.answers.get(req.method, ())
        self.requests.append(Received(req, self.wire.now(), answered=bool(rules)))
        if not rules:
            self.unanswered.append(req)
            return
        for answer in rules:
            self.answer(req, answer)

    def answer(self, req: SIPRequest, answer: Answer) -> None:
        """Send `answer` to `req` now, or after its delay (virtual time); a request answered finally
        leaves `unanswered`."""
        if answer.after > 0:
            self.wire.later(answer.after, lambda: self._send_answer(req, answer))
        else:
            self._send_answer(req, answer)

    def _send_answer(self, req: SIPRequest, answer: Answer) -> None:
        branch = req.via.branch or ""
        if req.method == "INVITE" and branch in self._finals:
            return   # already answered finally (a CANCEL's 487 came first)
        v = self.variables
        tag = None
        if not req.to.tag:
            tag = self._tags.setdefault(req.call_id, generate_tag())
        headers = [(n, substitute(val, v)) for n, val in answer.headers if val is not None]
        if 101 <= answer.status < 300 and req.method in _CONTACT_METHODS and not any(
                n.lower() in ("contact", "m") for n, _ in headers):
            headers.append(("Contact", f"<{self.contact}>"))
        body = substitute(answer.body, v).encode() if answer.body is not None else b""
        content_type = answer.content_type or (_BODY_TYPES.get(req.method, "text/plain") if body else None)
        resp = build_reply(req, answer.status, answer.reason, to_tag=tag, headers=headers, body=body,
                           content_type=content_type, record_route=True)
        data = resp.to_bytes()
        self._answered[(branch, req.method)] = data
        if answer.status >= 200:
            if req.method == "INVITE":
                self._finals[branch] = answer.status
            if req in self.unanswered:
                self.unanswered.remove(req)
        self.wire.send(self, data)

    def _resend_with_credentials(self, sent: SIPRequest, challenge: SIPResponse) -> None:
        """A UA with a password answers a 401/407 itself (not queued): the request again with a new
        branch, the next CSeq and the Authorization (Proxy-Authorization) the challenge asks for. A
        second challenge is queued for the scenario (wrong password)."""
        from routescript.testing.digest import authorization

        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        value = challenge.header(header)
        if value is None or self.password is None:
            self.replies.append(Received(challenge, self.wire.now()))
            return
        req = sent.copy()
        cseq = sent.cseq.number + 1
        for d in self.dialogs.values():
            if d.call_id == sent.call_id and d.local_tag == (sent.from_.tag or ""):
                d.local_cseq = max(d.local_cseq, cseq)
                if sent.method == "INVITE":
                    d.invite_cseq = cseq
        via = self._via()
        req.set_header("Via", via)
        req.set_header("CSeq", f"{cseq} {sent.method}")
        req.set_header("Authorization" if challenge.status == 401 else "Proxy-Authorization",
                       authorization(value, self.username, self.password, sent.method, sent.ruri))
        self._remember(req)
        self._authenticated.add(req.via.branch or "")
        self.wire.send(self, req.to_bytes())

    def _ack_error(self, invite: SIPRequest, resp: SIPResponse) -> None:
        hdrs = [("Via", invite.header_all("Via")[0]), ("Max-Forwards", "70"),
                ("From", invite.header("From") or ""), ("To", resp.header("To") or ""),
                ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.number} ACK")]
        hdrs += [("Route", r) for r in invite.header_all("Route")]
        self.wire.send(self, build_request("ACK", invite.ruri, hdrs).to_bytes())

    # --- dialogs --------------------------------------------------------------------------------

    def _update_dialog_from_reply(self, resp: SIPResponse) -> None:
        if not 101 <= resp.status < 300 or not resp.to.tag:
            return
        for d in self.dialogs.values():
            # An early dialog (a 1xx with a tag, of any fork) gives way to the fork that answers 2xx
            # (RFC 3261 13.2.2.4); a confirmed dialog stays with its tag.
            if d.call_id == resp.call_id and (d.remote_tag in (None, resp.to.tag) or
                                              (resp.status >= 200 and not d.confirmed)):
                if resp.status >= 200:
                    d.confirmed = True
                if resp.status >= 200 or d.remote_tag is None:
                    d.remote_tag = resp.to.tag
                    contacts = resp.contacts
                    if contacts and contacts[0].uri is not None:
                        d.remote_target = str(contacts[0].uri)
                    d.route_set = [str(r) for r in reversed(resp.record_routes)]

    def _update_dialog_from_request(self, req: SIPRequest) -> None:
        for d in self.dialogs.values():
            if d.call_id == req.call_id and d.local_tag == (req.to.tag or ""):
                if d.remote_tag is None:
                    d.remote_tag = req.from_.tag
                    d.route_set = [str(r) for r in req.record_routes]
                contacts = req.contacts
                if contacts and contacts[0].uri is not None:
                    d.remote_target = str(contacts[0].uri)

    def adopt_dialog(self, name: str, req: SIPRequest) -> None:
        """`expect: {request: INVITE, dialog: x}` on the called side: the dialog this request made,
        with the To tag this UA answers with (RFC 3261 12.1.1)."""
        if name in self.dialogs:
            return
        tag = req.to.tag or self._tags.setdefault(req.call_id, generate_tag())
        contacts = req.contacts
        target = str(contacts[0].uri) if contacts and contacts[0].uri is not None else None
        self.dialogs[name] = DialogState(req.call_id, tag, str(req.to.uri), str(req.from_.uri),
                                         remote_tag=req.from_.tag, remote_target=target,
                                         route_set=[str(r) for r in req.record_routes], local_cseq=0)


def _raw_bytes(text: str) -> bytes:
    """Raw text as a message: lines end in CRLF up to the blank line (YAML gives LF); the head ends
    with a blank line; the body is kept as written."""
    head, sep, body = text.replace("\r\n", "\n").partition("\n\n")
    head = head.strip("\n")
    return (head.replace("\n", "\r\n") + "\r\n\r\n").encode() + (body.replace("\n", "\r\n").encode()
                                                                   if sep else b"")
