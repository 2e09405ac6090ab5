"""Seeded mutation of valid SIP datagrams, for the mutation fuzz of test_mutation_fuzz_e2e.py.

`MutationSource(seed, port)` yields datagrams: a valid PUBLISH (PIDF, dialog-info, message-summary),
SUBSCRIBE (presence, presence.winfo, dialog, message-summary), OPTIONS or NOTIFY answer, then one to three
mutations - bit flips, byte insertions and deletions, truncations, a control character put into the Call-ID,
a tag, a URI, a header value or the body, a header line repeated or dropped, a value made long. The
sequence depends only on the seed. `answer_notify` answers the server's NOTIFYs (200, 481, or a mutated
answer), from a second generator seeded from the same seed; what it answers depends on what the server sent.

`sendable(datagram)` keeps the server's own traffic on loopback: a datagram whose Contact, Record-Route or
Via maddr names a host that is not a loopback IP literal (a mutated 127.0.0.1 can become 125.0.0.1, or a
name to resolve) is not sent. It parses with the server's own parser, so it sees what the server will see.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from routescript.sip import ParseError, SIPRequest, SIPResponse, parse_message

PRESENTITIES = ("alice", "bob", "carol")
CONTROL = [bytes([c]) for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)]
ODD = [b"\r", b"\n", b"\r\n", b" ", b"\t", b'"', b"<", b">", b";", b",", b"=", b"%", b"@", b":", b"\xff",
       "\u00e9".encode(), "\ufffe".encode(), b"\xed\xa0\x80"]

PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" '
        'entity="sip:{user}@127.0.0.1"><tuple id="t{n}"><status><basic>{basic}</basic></status>'
        '<contact>sip:{user}@127.0.0.1</contact><note>fuzz {n}</note></tuple>'
        '<dm:person id="p{n}"><rpid:activities><rpid:busy/></rpid:activities></dm:person></presence>\n')
DIALOG_INFO = ('<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{n}" '
               'state="full" entity="sip:{user}@127.0.0.1"><dialog id="d{n}" call-id="c{n}" local-tag="l{n}" '
               'remote-tag="r{n}" direction="initiator"><state>confirmed</state><remote><identity>'
               'sip:x@127.0.0.1</identity><target uri="sip:x@127.0.0.1:5070"/></remote></dialog>'
               '</dialog-info>\n')
SUMMARY = "Messages-Waiting: yes\r\nMessage-Account: sip:{user}@127.0.0.1\r\nVoice-Message: {n}/1 (0/0)\r\n"
BODIES = {"presence": ("application/pidf+xml", PIDF), "dialog": ("application/dialog-info+xml", DIALOG_INFO),
          "message-summary": ("application/simple-message-summary", SUMMARY)}
ACCEPT = {"presence": "application/pidf+xml", "presence.winfo": "application/watcherinfo+xml",
          "dialog": "application/dialog-info+xml", "message-summary": "application/simple-message-summary"}


@dataclass
class Dialog:
    """A subscription the server accepted (learnt from its 2xx): refreshed or ended in-dialog later."""

    call_id: str
    from_tag: str
    to_tag: str
    presentity: str
    event: str
    cseq: int = 1


@dataclass
class Mutator:
    """The mutations, drawn from `rng`: `mutate(data)` applies one to three of them."""

    rng: random.Random

    def mutate(self, data: bytearray) -> None:
        ops = [op for op, _ in self.MUTATIONS]
        weights = [w for _, w in self.MUTATIONS]
        for op in self.rng.choices(ops, weights=weights, k=self.rng.randint(1, 3)):
            if data:
                op(self, data)

    def _flip_bits(self, data: bytearray) -> None:
        for _ in range(self.rng.randint(1, 4)):
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)

    def _insert_bytes(self, data: bytearray) -> None:
        i = self.rng.randrange(len(data) + 1)
        data[i:i] = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 4)))

    def _delete_bytes(self, data: bytearray) -> None:
        i = self.rng.randrange(len(data))
        del data[i:i + self.rng.randint(1, 16)]

    def _truncate(self, data: bytearray) -> None:
        del data[self.rng.randrange(len(data)):]

    def _into(self, data: bytearray, marker: bytes) -> None:
        """A control (or odd) character at a random place of the value after `marker`."""
        at = data.find(marker)
        if at < 0:
            return self._insert_bytes(data)
        start = at + len(marker)
        end = data.find(b"\r\n", start)
        end = len(data) if end < 0 else end
        i = self.rng.randint(start, max(start, end))
        pool = CONTROL if self.rng.random() < 0.75 else ODD
        data[i:i] = self.rng.choice(pool) * self.rng.randint(1, 2)
        return None

    def _into_call_id(self, data: bytearray) -> None:
        self._into(data, b"Call-ID: ")

    def _into_tag(self, data: bytearray) -> None:
        self._into(data, self.rng.choice((b";tag=", b"To: ", b"From: ")))

    def _into_uri(self, data: bytearray) -> None:
        self._into(data, self.rng.choice((b"sip:", b"SUBSCRIBE ", b"PUBLISH ", b"Contact: <")))

    def _into_header(self, data: bytearray) -> None:
        lines = bytes(data).split(b"\r\n")
        header_lines = [line for line in lines[1:] if b": " in line]
        if not header_lines:
            return self._insert_bytes(data)
        return self._into(data, self.rng.choice(header_lines).split(b": ", 1)[0] + b": ")

    def _into_body(self, data: bytearray) -> None:
        at = data.find(b"\r\n\r\n")
        if at < 0 or at + 4 >= len(data):
            return self._insert_bytes(data)
        choice = self.rng.random()
        body = data[at + 4:]
        if choice < 0.3 and b'id="t' in body:  # a second tuple with the same id
            end = body.find(b"</tuple>")
            start = body.find(b"<tuple")
            if 0 <= start < end:
                body[end + 8:end + 8] = body[start:end + 8]
        elif choice < 0.45 and b"<tuple" in body:  # a tuple in a foreign namespace
            body[body.find(b"<tuple"):body.find(b"<tuple")] = b'<x:tuple xmlns:x="urn:x" id="x"/>'
        else:
            i = at + 4 + self.rng.randrange(len(body))
            data[i:i] = self.rng.choice(CONTROL + ODD)
            return None
        data[at + 4:] = body  # Content-Length stays: a body longer or shorter than it says, on purpose
        return None

    def _repeat_line(self, data: bytearray) -> None:
        lines = bytes(data).split(b"\r\n")
        if len(lines) > 3:
            i = self.rng.randrange(1, len(lines) - 2)
            lines.insert(i, lines[self.rng.randrange(1, len(lines) - 2)])
        data[:] = b"\r\n".join(lines)

    def _drop_line(self, data: bytearray) -> None:
        lines = bytes(data).split(b"\r\n")
        if len(lines) > 3:
            del lines[self.rng.randrange(len(lines) - 2)]
        data[:] = b"\r\n".join(lines)

    def _long_value(self, data: bytearray) -> None:
        at = data.find(b": ", data.find(b"\r\n"))
        if at < 0:
            return
        end = data.find(b"\r\n", at)
        value = data[at + 2:end]
        data[at + 2:end] = value * self.rng.choice((2, 10, 100))

    MUTATIONS: tuple[tuple[Callable[[Mutator, bytearray], None], int], ...] = (
        (_flip_bits, 10), (_insert_bytes, 8), (_delete_bytes, 8), (_truncate, 5), (_into_call_id, 12),
        (_into_tag, 10), (_into_uri, 10), (_into_header, 10), (_into_body, 8), (_repeat_line, 4),
        (_drop_line, 4), (_long_value, 3),
    )



@dataclass
class MutationSource:
    seed: int
    port: int            # the server's port
    local_port: int      # ours (Via, Contact)
    rng: random.Random = field(init=False)
    answers: random.Random = field(init=False)
    dialogs: list[Dialog] = field(default_factory=list)
    n: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.answers = random.Random(self.seed ^ 0x5EED)
        self.mutator = Mutator(self.rng)
        self.answer_mutator = Mutator(self.answers)

    # --- valid datagrams ------------------------------------------------------------------------------

    def _head(self, method: str, ruri: str, frm: str, to: str, call_id: str, cseq: int,
              extra: list[str], body: bytes = b"", ctype: str | None = None) -> bytes:
        n = self.n
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch=z9hG4bK-fz{self.seed}-{n};rport",
                 "Max-Forwards: 70", f"From: {frm}", f"To: {to}", f"Call-ID: {call_id}",
                 f"CSeq: {cseq} {method}", *extra]
        if ctype is not None:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def valid(self) -> bytes:
        """One valid request (or NOTIFY answer) chosen by the seeded generator."""
        rng, n = self.rng, self.n
        user = rng.choice(PRESENTITIES)
        uri = f"sip:{user}@127.0.0.1:{self.port}"
        kind = rng.choices(("publish", "subscribe", "winfo", "in_dialog", "options", "answer"),
                           weights=(30, 30, 8, 14, 4, 14))[0]
        if kind == "in_dialog" and not self.dialogs:
            kind = "subscribe"
        if kind == "publish":
            event = rng.choices(("presence", "dialog", "message-summary"), weights=(6, 2, 1))[0]
            ctype, template = BODIES[event]
            body = template.format(user=user, n=n, basic=rng.choice(("open", "closed"))).encode()
            extra = [f"Event: {event}", f"Expires: {rng.choice((0, 5, 60, 3600))}"]
            if rng.random() < 0.2:
                extra.append(f"SIP-If-Match: a.{rng.randrange(10**9)}.1.1")
            return self._head("PUBLISH", uri, f"<sip:{user}@127.0.0.1>;tag=fp{n}", f"<sip:{user}@127.0.0.1>",
                              f"fz-pub-{self.seed}-{n}@127.0.0.1", 1, extra, body, ctype)
        if kind in ("subscribe", "winfo"):
            event = "presence.winfo" if kind == "winfo" else rng.choices(
                ("presence", "dialog", "message-summary"), weights=(6, 2, 1))[0]
            watcher = user if kind == "winfo" else f"w{rng.randrange(40)}"
            extra = [f"Contact: <sip:{watcher}@127.0.0.1:{self.local_port}>", f"Event: {event}",
                     f"Accept: {ACCEPT[event]}", f"Expires: {rng.choice((0, 30, 600))}",
                     "User-Agent: fuzz/1.0"]
            return self._head("SUBSCRIBE", uri, f"<sip:{watcher}@127.0.0.1>;tag=fs{n}", f"<{uri}>",
                              f"fz-sub-{self.seed}-{n}@127.0.0.1", 1, extra)
        if kind == "in_dialog":
            d = rng.choice(self.dialogs)
            d.cseq += 1
            expires = rng.choice((0, 0, 600))
            extra = [f"Contact: <sip:w@127.0.0.1:{self.local_port}>", f"Event: {d.event}",
                     f"Expires: {expires}"]
            return self._head("SUBSCRIBE", f"sip:{d.presentity}@127.0.0.1:{self.port}",
                              f"<sip:w@127.0.0.1>;tag={d.from_tag}",
                              f"<sip:{d.presentity}@127.0.0.1>;tag={d.to_tag}", d.call_id, d.cseq, extra)
        if kind == "options":
            return self._head("OPTIONS", uri, f"<sip:fz@127.0.0.1>;tag=fo{n}", f"<{uri}>",
                              f"fz-opt-{self.seed}-{n}", 1, [])
        # an answer to a NOTIFY the server never sent (or sent and forgot): matched by nothing
        return (f"SIP/2.0 {rng.choice((200, 481, 408, 500))} Whatever\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{rng.randrange(10**12):x}\r\n"
                f"From: <sip:{user}@127.0.0.1>;tag={rng.randrange(10**8):x}\r\n"
                f"To: <sip:w1@127.0.0.1>;tag=fs{rng.randrange(n + 1)}\r\n"
                f"Call-ID: fz-sub-{self.seed}-{rng.randrange(n + 1)}@127.0.0.1\r\n"
                f"CSeq: {rng.randrange(1, 9)} NOTIFY\r\n"
                "Content-Length: 0\r\n\r\n").encode()

    def next(self) -> bytes:
        """The next datagram: valid, then (nine times in ten) mutated one to three times."""
        self.n += 1
        data = bytearray(self.valid())
        if self.rng.random() < 0.9:
            self.mutator.mutate(data)
        return bytes(data) or b"X"

    # --- the server's side -----------------------------------------------------------------------------

    def learn(self, data: bytes) -> None:
        """A 2xx to one of our SUBSCRIBEs: remember the dialog (at most 200, oldest dropped)."""
        try:
            msg = parse_message(data)
            if not isinstance(msg, SIPResponse) or msg.cseq.method != "SUBSCRIBE" or msg.status >= 300:
                return
            to_tag, from_tag, event = msg.to.tag, msg.from_.tag, "presence"
            user = msg.to.uri.user or ""
        except ParseError:
            return
        if to_tag and from_tag and user in PRESENTITIES:
            self.dialogs.append(Dialog(msg.call_id, from_tag, to_tag, user, event))
            del self.dialogs[:-200]

    def answer_notify(self, notify: SIPRequest) -> bytes:
        """The answer to a NOTIFY of the server: 200, 481 (the subscription ends, the watcher list is
        rebuilt), or a mutated 200 - chosen by the answers generator."""
        status = self.answers.choices((200, 481, 0), weights=(75, 12, 13))[0]
        lines = [f"SIP/2.0 {status or 200} {'OK' if status != 481 else 'Call Does Not Exist'}"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            lines += [f"{name}: {value}" for value in notify.header_all(name)]
        data = bytearray(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
        if status == 0:
            self.answer_mutator.mutate(data)
        return bytes(data) or b"X"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False   # a name: resolving it is traffic off this machine


def sendable(data: bytes) -> bool:
    """False when the server could send something off loopback because of this datagram (see above)."""
    try:
        msg = parse_message(data)
    except ParseError:
        return True    # answered (best effort) to the packet's source, a loopback address
    if not isinstance(msg, SIPRequest):
        return True
    try:
        via = msg.via
        if via.param("maddr") is not None and not _loopback(via.param("maddr") or ""):
            return False
    except ParseError:
        pass
    for read in (lambda: [c.uri for c in msg.contacts if c.uri is not None],
                 lambda: [r.uri for r in msg.record_routes], lambda: [r.uri for r in msg.routes]):
        try:
            uris = read()
        except ParseError:
            continue
        for uri in uris:
            if not _loopback(uri.param("maddr") or uri.host):
                return False
    return True
