"""SipTestClient: a small asyncio SIP user agent for tests over real sockets (UDP, TCP, TLS, WebSocket or
secure WebSocket).

    client = await SipTestClient.start("udp", ("127.0.0.1", port))
    sub = client.subscribe("sip:alice@127.0.0.1", event="presence", expires=600)
    resp = await client.send_request(sub)     # the final response (provisionals in .responses_for)
    dialog = client.dialog(sub, resp)         # for refreshes: client.subscribe(..., dialog=dialog)
    notify = await client.expect_request("NOTIFY", call_id=sub.call_id)
    await client.reply(notify, 200)           # or client.auto_reply["NOTIFY"] = 200
    await client.close()

Choices, for tests to be deterministic on loopback: the client never retransmits its own requests
(`send_request` just waits up to `timeout`); a retransmission of a request it already received is not
queued again - it is counted in `retransmissions` and, when that request was answered, the answer is
sent again (as a server transaction would).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket as _socket
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

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
from routescript.transport.address import TCP, TLS, UDP, WS, WS_PROTOCOLS, WSS, host_for_uri, is_ipv6
from routescript.transport.errors import FramingError
from routescript.transport.framing import PONG, Ping, StreamFramer

log = logging.getLogger("routescript.testing")

_call_ids = itertools.count(1)


_T = TypeVar("_T")


class SipTimeout(AssertionError):
    """Nothing (matching) arrived in time. An AssertionError, so pytest shows it as a test failure."""


@dataclass(slots=True)
class Dialog:
    """What a UA keeps of a dialog (RFC 3261 12.1) to send requests inside it: its Call-ID, both tags,
    both URIs, the remote target (Contact) and route set, and the local CSeq."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq


# What the client does with what arrives: (bytes, the address they came from).
OnData = Callable[[bytes, tuple[str, int]], None]


class _UdpProto(asyncio.DatagramProtocol):
    def __init__(self, on_data: OnData) -> None:
        self.on_data = on_data

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_data(data, (addr[0], addr[1]))


class _TcpProto(asyncio.Protocol):
    """One connection to `server`: its frames go to on_data as if they came from there."""

    def __init__(self, on_data: OnData, server: tuple[str, int]) -> None:
        self.on_data = on_data
        self.server = server
        self.framer = StreamFramer(1 << 20)
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            items = self.framer.feed(data)
        except FramingError as exc:
            log.warning("test client: server stream out of sync: %s", exc)
            if self.transport is not None:
                self.transport.close()
            return
        for item in items:
            if isinstance(item, Ping):
                if self.transport is not None:
                    self.transport.write(PONG)
            else:
                self.on_data(item, self.server)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def send_raw(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)


class _WsProto(_TcpProto):
    """One WebSocket connection to `server` (RFC 7118: subprotocol `sip` unless told otherwise), on the
    `websockets` library's sans-IO client: each message it carries goes to on_data; `opened` gets the
    handshake's HTTP status."""

    def __init__(self, on_data: OnData, server: tuple[str, int], *, origin: str | None,
                 subprotocols: Iterable[str], secure: bool = False) -> None:
        from websockets.client import ClientProtocol
        from websockets.typing import Origin, Subprotocol
        from websockets.uri import parse_uri

        super().__init__(on_data, server)
        scheme = "wss" if secure else "ws"
        self.ws = ClientProtocol(parse_uri(f"{scheme}://{host_for_uri(server[0])}:{server[1]}/"),
                                 origin=Origin(origin) if origin else None,
                                 subprotocols=[Subprotocol(p) for p in subprotocols] or None,
                                 max_size=1 << 20)
        self.opened: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Response

        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response) and not self.opened.done():
                self.opened.set_result(event.status_code)
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                self.on_data(bytes(event.data), self.server)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(0)
        super().connection_lost(exc)

    def send_raw(self, data: bytes) -> None:
        """One SIP message (or any bytes) in one text frame."""
        if self.ws.state.name == "OPEN":
            self.ws.send_text(data)
            self._flush()

    def close_ws(self) -> None:
        """The closing handshake (close code 1000), before the TCP close."""
        if self.ws.state.name == "OPEN":
            self.ws.send_close(1000)
            self._flush()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()


class SipTestClient:
    """A SIP UA bound to `local_host` on an ephemeral port, talking to one server address.

    proto "udp": one UDP socket; "tcp": one connection to the server (its local port is the Contact
    port, so the server can send requests back on it); "tls": the same over TLS, with `tls_context`
    (an ssl.SSLContext for the client side: the CA to trust, a client certificate) and `server_name`
    (sent as SNI; None sends none); "ws": one WebSocket connection (the same; with `ws_origin` as its
    Origin header and `ws_subprotocols` offered, `sip` by default); "wss": a WebSocket over TLS (with
    `tls_context` and `server_name` as for tls). `timeout` is the default of every wait.
    `auto_reply` maps a method to the status answered automatically (e.g. {"NOTIFY": 200}); the
    requests are still queued for `expect_request`. `sent_by_host`: the host written in Via and Contact
    instead of the local address (a browser's JsSIP or SIP.js writes a made-up `xyz.invalid`; over
    WebSocket or TCP the server answers on the connection anyway).
    """

    def __init__(self, proto: str, server: tuple[str, int], *, user: str = "tester",
                 domain: str | None = None, timeout: float = 2.0, tls_context: ssl.SSLContext | None = None,
                 server_name: str | None = None) -> None:
        self.proto = proto.lower()
        if self.proto not in (UDP, TCP, TLS, WS, WSS):
            raise ValueError(f"unsupported transport {proto!r}")
        if self.proto in (TLS, WSS) and tls_context is None:
            raise ValueError(f"a {self.proto} client needs tls_context (an ssl.SSLContext)")
        self.tls_context = tls_context
        self.server_name = server_name
        self.server = (server[0].strip("[]"), int(server[1]))
        self.user = user
        self.domain = domain or host_for_uri(self.server[0])
        self.timeout = timeout
        self.auto_reply: dict[str, int] = {}
        self.sent_by_host: str | None = None
        self.local_host = ""
        self.local_port = 0
        self.requests: list[SIPRequest] = []          # every distinct request received, in order
        self.responses: list[SIPResponse] = []        # every response received, in order
        self.retransmissions: dict[tuple[str, str], int] = {}   # (branch, method) -> extra copies seen
        self.garbage: list[bytes] = []                # what arrived and did not parse
        self._pending: deque[SIPRequest] = deque()    # requests not yet taken by expect_request
        self._by_branch: dict[tuple[str, str], list[SIPResponse]] = {}
        self._answers: dict[tuple[str, str], SIPResponse] = {}
        self._changed = asyncio.Event()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: _TcpProto | None = None   # TCP, or WebSocket (_WsProto)
        self.ws_origin: str | None = "http://127.0.0.1"
        self.ws_subprotocols: tuple[str, ...] = ("sip",)
        self.ws_status = 0   # the HTTP status of the WebSocket handshake's answer

    # --- life cycle -----------------------------------------------------------------------------

    @classmethod
    async def start(cls, proto: str, server: tuple[str, int], *, local_host: str | None = None,
                    user: str = "tester", domain: str | None = None, timeout: float = 2.0,
                    ws_origin: str | None = "http://127.0.0.1",
                    ws_subprotocols: Iterable[str] = ("sip",),
                    tls_context: ssl.SSLContext | None = None,
                    server_name: str | None = None) -> SipTestClient:
        """Open the socket (UDP) or the connection (TCP, TLS: handshake done, WebSocket) and return the
        running client. ssl.SSLError / OSError when the TLS handshake fails. Over WebSocket, a refused
        handshake is an AssertionError (unless `ws_status` is what the test wants: then call `_open`
        itself)."""
        client = cls(proto, server, user=user, domain=domain, timeout=timeout, tls_context=tls_context,
                     server_name=server_name)
        client.ws_origin, client.ws_subprotocols = ws_origin, tuple(ws_subprotocols)
        await client._open(local_host)
        if client.proto in WS_PROTOCOLS and client.ws_status != 101:
            await client.close()
            raise AssertionError(f"WebSocket handshake refused: HTTP {client.ws_status}")
        return client

    async def _open(self, local_host: str | None) -> None:
        loop = asyncio.get_running_loop()
        if local_host is None:
            local_host = "::1" if is_ipv6(self.server[0]) else "127.0.0.1"
        if self.proto == UDP:
            family = _socket.AF_INET6 if is_ipv6(local_host) else _socket.AF_INET
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProto(self._on_data), local_addr=(local_host, 0), family=family)
            self._udp = udp
            sockname = udp.get_extra_info("sockname")
        else:
            def make() -> _TcpProto:
                if self.proto in WS_PROTOCOLS:
                    return _WsProto(self._on_data, self.server, origin=self.ws_origin,
                                    subprotocols=self.ws_subprotocols, secure=self.proto == WSS)
                return _TcpProto(self._on_data, self.server)

            tls: dict[str, Any] = {}
            if self.proto in (TLS, WSS):
                tls = {"ssl": self.tls_context, "server_hostname": self.server_name or ""}
            tcp, proto_obj = await loop.create_connection(make, self.server[0], self.server[1],
                                                          local_addr=(local_host, 0), **tls)
            self._tcp = proto_obj
            sockname = tcp.get_extra_info("sockname")
            if isinstance(proto_obj, _WsProto):
                self.ws_status = await asyncio.wait_for(asyncio.shield(proto_obj.opened), self.timeout)
        self.local_host, self.local_port = sockname[0], sockname[1]

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if isinstance(self._tcp, _WsProto):
            self._tcp.close_ws()
        if self._tcp is not None and self._tcp.transport is not None:
            self._tcp.transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(self._tcp.lost), 1.0)
            except TimeoutError:
                pass

    async def reconnect(self, timeout: float = 5.0) -> None:
        """TCP: a new connection to the server from the same local address and port, as a phone with a
        fixed SIP port opens one when its connection broke (the server restarted): its Contact, Via and
        the server's bindings of it stay right. The old connection is closed first. Retried until
        `timeout` while the server is not listening yet. UDP: nothing to do. Not for TLS/WebSocket."""
        if self.proto == UDP:
            return
        if self.proto != TCP or self._tcp is None:
            raise ValueError(f"reconnect() is for TCP clients, not {self.proto}")
        old = self._tcp
        if old.transport is not None:
            old.transport.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        family = _socket.AF_INET6 if is_ipv6(self.local_host) else _socket.AF_INET
        while True:
            sock = _socket.socket(family, _socket.SOCK_STREAM)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            try:
                sock.bind((self.local_host, self.local_port))
                await loop.sock_connect(sock, self.server)
                break
            except OSError:
                sock.close()
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.1)
        _tcp, proto_obj = await loop.create_connection(lambda: _TcpProto(self._on_data, self.server),
                                                       sock=sock)
        self._tcp = proto_obj

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """TCP: the connection is still open (the server may close it on bad input). UDP: True."""
        return self._tcp is None or not self._tcp.lost.done()

    async def wait_closed(self, timeout: float | None = None) -> bool:
        """TCP: wait until the server closes the connection; True when it did within `timeout`."""
        if self._tcp is None:
            return False
        try:
            await asyncio.wait_for(asyncio.shield(self._tcp.lost), timeout or self.timeout)
        except TimeoutError:
            return False
        return True

    # --- addresses ------------------------------------------------------------------------------

    @property
    def hostport(self) -> str:
        return f"{host_for_uri(self.local_host)}:{self.local_port}"

    @property
    def sent_by(self) -> str:
        """host:port of our Via and Contact: `hostport`, or `sent_by_host` alone when set."""
        return self.sent_by_host or self.hostport

    @property
    def aor(self) -> str:
        """This client's address of record: sip:user@domain."""
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact_uri(self) -> str:
        return f"sip:{self.user}@{self.sent_by}{self._transport_param}"

    @property
    def server_uri(self) -> str:
        """sip:host:port of the server (with ;transport=tcp over TCP, tls over TLS, ws over WebSocket)."""
        return f"sip:{host_for_uri(self.server[0])}:{self.server[1]}{self._transport_param}"

    @property
    def _transport_param(self) -> str:
        return "" if self.proto == UDP else f";transport={self.proto}"

    # --- building requests ----------------------------------------------------------------------

    def request(self, method: str, uri: str | None = None, *, headers: Iterable[tuple[str, str]] = (),
                body: bytes = b"", content_type: str | None = None, to: str | None = None,
                from_: str | None = None, call_id: str | None = None, cseq: int = 1,
                from_tag: str | None = None, to_tag: str | None = None, contact: bool = True,
                dialog: Dialog | None = None, branch: str | None = None) -> SIPRequest:
        """A request with a fresh branch (and, outside a dialog, a fresh Call-ID and From tag).

        `uri` defaults to the To URI; `to` defaults to `uri`; `from_` to this client's AOR. With
        `dialog`, Call-ID, tags, CSeq (incremented), Request-URI and Route come from it.
        """
        if dialog is not None:
            uri = uri or dialog.remote_target
            to = dialog.remote_uri
            from_ = dialog.local_uri
            call_id = dialog.call_id
            from_tag = dialog.local_tag
            to_tag = dialog.remote_tag
            cseq = dialog.next_cseq()
        target = uri or to or self.server_uri
        to = to or target
        from_ = from_ or self.aor
        via = f"SIP/2.0/{self.proto.upper()} {self.sent_by};branch={branch or generate_branch()};rport"
        hdrs: list[tuple[str, str]] = [("Via", via)]
        if dialog is not None:
            hdrs += [("Route", route) for route in dialog.route_set]
        hdrs += [
            ("Max-Forwards", "70"),
            ("From", f"<{from_}>;tag={from_tag or generate_tag()}"),
            ("To", f"<{to}>" + (f";tag={to_tag}" if to_tag else "")),
            ("Call-ID", call_id or f"rstest-{next(_call_ids)}-{generate_tag()}"),
            ("CSeq", f"{cseq} {method}"),
        ]
        if contact:
            hdrs.append(("Contact", f"<{self.contact_uri}>"))
        hdrs += list(headers)
        return build_request(method, target, hdrs, body, content_type=content_type)

    def options(self, uri: str | None = None, **kw: Any) -> SIPRequest:
        return self.request("OPTIONS", uri, contact=False, **kw)

    def publish(self, uri: str, body: bytes | str | None = None, *, event: str = "presence",
                expires: int | None = 3600, etag: str | None = None,
                content_type: str = "application/pidf+xml", headers: Iterable[tuple[str, str]] = (),
                **kw: Any) -> SIPRequest:
        """A PUBLISH (RFC 3903): `etag` becomes SIP-If-Match (refresh/modify/remove); no body for a
        refresh; `expires=None` leaves Expires out."""
        extra: list[tuple[str, str]] = [("Event", event)]
        if expires is not None:
            extra.append(("Expires", str(expires)))
        if etag is not None:
            extra.append(("SIP-If-Match", etag))
        extra += list(headers)
        data = body.encode() if isinstance(body, str) else (body or b"")
        return self.request("PUBLISH", uri, headers=extra, body=data,
                            content_type=content_type if data else None, contact=False, **kw)

    def subscribe(self, uri: str | None = None, *, event: str | None = "presence", expires: int | None = 600,
                  accept: str | None = None, headers: Iterable[tuple[str, str]] = (),
                  dialog: Dialog | None = None, **kw: Any) -> SIPRequest:
        """A SUBSCRIBE (RFC 6665); `event=None` leaves Event out; with `dialog` a refresh (or, with
        expires=0, an unsubscribe) inside that subscription."""
        extra: list[tuple[str, str]] = []
        if event is not None:
            extra.append(("Event", event))
        if accept is not None:
            extra.append(("Accept", accept))
        if expires is not None:
            extra.append(("Expires", str(expires)))
        extra += list(headers)
        return self.request("SUBSCRIBE", uri, headers=extra, dialog=dialog, **kw)

    def ack(self, invite: SIPRequest, response: SIPResponse) -> SIPRequest:
        """The ACK for a non-2xx final response to `invite` (RFC 3261 17.1.1.3): same branch, Call-ID,
        From, Request-URI and CSeq number; the To of the response."""
        hdrs = [("Via", invite.header_all("Via")[0]), ("Max-Forwards", "70"),
                ("From", invite.header("From") or ""), ("To", response.header("To") or ""),
                ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.number} ACK")]
        hdrs += [("Route", value) for value in invite.header_all("Route")]
        return build_request("ACK", invite.ruri, hdrs)

    def ack_2xx(self, invite: SIPRequest, response: SIPResponse) -> Dialog:
        """Send the ACK of a 2xx to `invite` (RFC 3261 13.2.2.4: inside the dialog the 2xx made, through
        its route set, with the INVITE's CSeq number) and return that dialog."""
        dialog = self.dialog(invite, response)
        ack = self.request("ACK", dialog=dialog)
        ack.set_header("CSeq", f"{invite.cseq.number} ACK")
        self.send(ack)
        return dialog

    def dialog(self, request: SIPRequest, response: SIPResponse | SIPRequest) -> Dialog:
        """The dialog a request (SUBSCRIBE) created, from its 2xx response or from a NOTIFY inside it
        (RFC 3261 12.1.2: remote tag, remote target = Contact, route set = Record-Route reversed for a
        response, in order for a NOTIFY)."""
        if isinstance(response, SIPResponse):
            remote_tag = response.to.tag
            routes = [str(r) for r in reversed(response.record_routes)]
        else:
            remote_tag = response.from_.tag
            routes = [str(r) for r in response.record_routes]
        contacts = response.contacts
        target = str(contacts[0].uri) if contacts and contacts[0].uri is not None else request.ruri
        return Dialog(call_id=request.call_id, local_tag=request.from_.tag or "", remote_tag=remote_tag,
                      local_uri=str(request.from_.uri), remote_uri=str(request.to.uri),
                      remote_target=target, route_set=routes, local_cseq=request.cseq.number)

    # --- sending --------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (for malformed input tests)."""
        if self._udp is not None:
            self._udp.sendto(data, self.server)
        elif self._tcp is not None:
            self._tcp.send_raw(data)

    def send(self, message: SIPRequest | SIPResponse) -> None:
        """Send a message without waiting for anything."""
        self.send_raw(message.to_bytes())

    def _send_response(self, response: SIPResponse) -> None:
        """A response goes where its top Via says (RFC 3261 18.2.2: received, rport, else sent-by), which
        over UDP may be another server than ours (one that shares the dialog, e.g. fallback2db); over
        TCP it goes back on our one connection."""
        if self._udp is None:
            self.send(response)
            return
        try:
            via = response.via
        except ParseError:
            self.send(response)
            return
        host = via.received or via.host
        port = via.rport if isinstance(via.rport, int) else (via.port or 5060)
        self._udp.sendto(response.to_bytes(), (host.strip("[]"), port))

    async def send_request(self, request: SIPRequest, *, timeout: float | None = None) -> SIPResponse:
        """Send `request` and return its final response (SipTimeout when none comes in time)."""
        self.send(request)
        return await self.expect_response(request, final=True, timeout=timeout)

    async def expect_response(self, request: SIPRequest, *, final: bool = False, index: int | None = None,
                              timeout: float | None = None) -> SIPResponse:
        """The first response to `request` (the first final one with `final=True`; the `index`-th one
        with `index`), waiting up to `timeout`."""
        key = (request.via.branch or "", request.method)

        def find() -> SIPResponse | None:
            got = self._by_branch.get(key, [])
            if index is not None:
                return got[index] if len(got) > index else None
            for resp in got:
                if not final or resp.status >= 200:
                    return resp
            return None

        return await self._wait(find, timeout, f"no {'final ' if final else ''}response to "
                                                f"{request.method} {request.call_id}")

    def responses_for(self, request: SIPRequest) -> list[SIPResponse]:
        """Every response received so far for `request` (provisional and final, retransmissions too)."""
        return list(self._by_branch.get((request.via.branch or "", request.method), []))

    # --- receiving requests ---------------------------------------------------------------------

    async def expect_request(self, method: str | None = None, *, call_id: str | None = None,
                             where: Callable[[SIPRequest], bool] | None = None,
                             timeout: float | None = None) -> SIPRequest:
        """Take the oldest received request matching `method`/`call_id`/`where` (waiting up to
        `timeout`); SipTimeout when none arrives."""
        def find() -> SIPRequest | None:
            for req in self._pending:
                if method is not None and req.method != method:
                    continue
                if call_id is not None and req.call_id != call_id:
                    continue
                if where is not None and not where(req):
                    continue
                self._pending.remove(req)
                return req
            return None

        return await self._wait(find, timeout, f"no {method or 'request'} received"
                                                + (f" for {call_id}" if call_id else ""))

    async def expect_no_request(self, method: str | None = None, *, call_id: str | None = None,
                                within: float = 0.3) -> None:
        """Assert that no matching request arrives within `within` seconds."""
        try:
            req = await self.expect_request(method, call_id=call_id, timeout=within)
        except SipTimeout:
            return
        raise AssertionError(f"unexpected request: {req.start_line}")

    async def reply(self, request: SIPRequest, status: int = 200, reason: str | None = None, *,
                    headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                    content_type: str | None = None) -> SIPResponse:
        """Answer a received request (a retransmission of it later gets the same answer)."""
        response = build_reply(request, status, reason, headers=list(headers), body=body,
                               content_type=content_type)
        if status >= 200:
            self._answers[(request.via.branch or "", request.method)] = response
        self._send_response(response)
        return response

    # --- internals ------------------------------------------------------------------------------

    async def _wait(self, find: Callable[[], _T | None], timeout: float | None, what: str) -> _T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            found = find()
            if found is not None:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SipTimeout(what)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def _on_data(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n"):
            return
        try:
            msg = parse_message(data, max_size=1 << 20)
        except ParseError as exc:
            log.warning("test client: unparsable message from %s: %s", addr, exc.reason)
            self.garbage.append(data)
            self._changed.set()
            return
        if isinstance(msg, SIPResponse):
            self.responses.append(msg)
            try:
                key = (msg.via.branch or "", msg.cseq.method)
            except ParseError:
                key = ("", msg.cseq.method)
            self._by_branch.setdefault(key, []).append(msg)
        else:
            self._on_request(msg)
        self._changed.set()

    def _on_request(self, req: SIPRequest) -> None:
        try:
            key = (req.via.branch or "", req.method)
        except ParseError:
            key = ("", req.method)
        seen = any(key == (r.via.branch or "", r.method) for r in self.requests[-200:]) if key[0] else False
        if seen:
            self.retransmissions[key] = self.retransmissions.get(key, 0) + 1
            answer = self._answers.get(key)
            if answer is not None:
                self._send_response(answer)
            return
        self.requests.append(req)
        self._pending.append(req)
        status = self.auto_reply.get(req.method)
        if status is not None and req.method != "ACK":
            response = build_reply(req, status)
            self._answers[key] = response
            self._send_response(response)
