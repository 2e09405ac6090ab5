"""What workers send each other through their inboxes: small frozen values, each one datagram of
one-byte kind + fixed struct header + variable parts (never pickle: a datagram is data, not code).

    Handoff  b"H"  a SIP message read by one worker for another: its Source (with the TLS session of a tls
                   or wss connection), when it was read, its bytes
    TcpSend  b"T"  bytes to write on a TCP, TLS or WebSocket connection the receiving worker holds
                   (docs/workers.md 4), and the slot to tell when it cannot be sent (or none)
    SendFailed b"F" a relayed send the holder could not make: the request's top Via branch and method
                   (the asking worker's client transaction), where it went and why
    Announce b"A"  a change-feed notification (db_key, channel, payload) (docs/workers.md 3, feed B)
    Resync   b"R"  "you may have missed announcements": re-read what your watchers follow

`decode` of anything else raises MessageDecodeError saying what is wrong; `encode` refuses values that
do not fit (ValueError): both sides are our code, so either is a bug to log, never a crash of the reader.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from routescript.sip._memo import MEMO_SIZE
from routescript.sip.address import TCP, TLS, UDP, WS, WSS, SocketInfo, Source
from routescript.transport.tls import TlsSession

__all__ = ["MAX_DATAGRAM", "MAX_PAYLOAD", "NO_REPORT", "Announce", "Handoff", "InboxMessage",
           "MessageDecodeError", "Resync", "SendFailed", "TcpSend", "decode", "encode", "encode_handoff"]

MAX_PAYLOAD = 65536                 # the largest SIP message (TransportLayer.max_message_size default)
NO_REPORT = 255                     # TcpSend.report_to: nobody waits for this send's outcome
MAX_PEER_CERT = 16384               # the largest peer certificate (DER) a Handoff carries
# with the biggest header: two hosts of at most 255 bytes, a TLS session's names and certificate
MAX_DATAGRAM = MAX_PAYLOAD + 2048 + MAX_PEER_CERT


class MessageDecodeError(ValueError):
    """An inbox datagram that is not one of our messages."""


@dataclass(frozen=True, slots=True)
class Handoff:
    """`source.tls`: the session of the TLS (tls, wss) connection the message came over, which only the
    reading worker holds: the owner's $tls_* pseudo-variables and is_peer_verified read it there."""

    source: Source      # as the reading worker built it (conn_id global: slot << 48 | local id)
    arrived: float      # time.monotonic() when read: one clock for every process on Linux
    data: bytes


@dataclass(frozen=True, slots=True)
class TcpSend:
    """Write `data` on connection `conn_id`; when it is closed, send to remote_host:remote_port over
    another connection of transport `proto` (the fallback a closed connection gets in one process: a
    new TCP or TLS connection; a ws/wss peer is reached only by a connection it opened).
    `report_to`: the slot whose client transaction awaits this send (the first send of a request, which
    in one process waits for the connection to open): a failure is reported to it as SendFailed.
    NO_REPORT: a send whose failure one process only logs (responses, ACKs)."""

    conn_id: int
    data: bytes
    remote_host: str = ""
    remote_port: int = 0
    proto: str = TCP
    report_to: int = NO_REPORT


@dataclass(frozen=True, slots=True)
class SendFailed:
    """A relayed request the holder could not send: `branch` and `method` key the asking worker's
    client transaction (RFC 3261 17.1.3), which then gets its transport error as in one process."""

    branch: str
    method: str
    proto: str
    remote_host: str
    remote_port: int
    reason: str


@dataclass(frozen=True, slots=True)
class Announce:
    db_key: str
    channel: str
    payload: str


@dataclass(frozen=True, slots=True)
class Resync:
    reason: str


InboxMessage = Handoff | TcpSend | SendFailed | Announce | Resync

_PROTOS = (UDP, TCP, TLS, WS, WSS)
_PROTO_CODES = {proto: code for code, proto in enumerate(_PROTOS)}
_WITH_TLS = 0x80   # in a Handoff's proto byte: a TLS session follows the hosts
# Handoff: arrived; then where it came from: proto (| _WITH_TLS), socket proto, socket port, remote port,
#          conn_id + 1 (0: none), socket host length, remote host length; the two hosts, the TLS session;
#          then the message. `arrived` first: the bytes after it up to the message name the Source.
_HANDOFF = struct.Struct("!dBBHHQBB")
_SOURCE_AT = 1 + 8
# The Sources read from Handoffs, by their encoded bytes: one peer's are the same every time, and a frozen
# dataclass (two of them: SocketInfo, Source) costs more to make than the rest of the decode. Bounded as
# the parse memos; a Source with a TLS session is made each time (the session is the connection's).
_SOURCES: dict[bytes, Source] = {}
# TLS session: version, cipher, description, domain lengths, bits, certificate length (0: none), flags
_TLS_SESSION = struct.Struct("!BBBBHHB")
_VERIFIED, _SERVER_SIDE = 1, 2
# conn_id, fallback port, fallback host length, proto, report_to; host; data
_TCP_SEND = struct.Struct("!QHBBB")
# proto, port, host length, method length, branch length; host, method, branch, reason
_SEND_FAILED = struct.Struct("!BHBBB")
_ANNOUNCE = struct.Struct("!HH")          # db_key length, channel length; db_key, channel, payload
_KINDS = {b"H"[0]: "Handoff", b"T"[0]: "TcpSend", b"F"[0]: "SendFailed", b"A"[0]: "Announce",
          b"R"[0]: "Resync"}


def encode(message: InboxMessage) -> bytes:
    """One datagram; ValueError when a part does not fit its field or the whole is over MAX_DATAGRAM."""
    try:
        out = _encode(message)
    except struct.error as exc:   # a port, length or conn_id out of its field's range
        raise ValueError(f"cannot encode {type(message).__name__}: {exc}") from None
    if len(out) > MAX_DATAGRAM:
        raise ValueError(f"{type(message).__name__} of {len(out)} bytes is over the {MAX_DATAGRAM}-byte "
                         "limit")
    return out


def _encode(message: InboxMessage) -> bytes:
    if isinstance(message, Handoff):
        out = encode_handoff(message.source, message.arrived, message.data)
    elif isinstance(message, TcpSend):
        host = _host_bytes(message.remote_host)
        out = b"T" + _TCP_SEND.pack(message.conn_id, message.remote_port, len(host),
                                    _proto_code(message.proto), message.report_to) + host + message.data
    elif isinstance(message, SendFailed):
        host = _host_bytes(message.remote_host)
        method, branch = message.method.encode(), message.branch.encode()
        out = (b"F" + _SEND_FAILED.pack(_proto_code(message.proto), message.remote_port, len(host),
                                        len(method), len(branch))
               + host + method + branch + message.reason[:512].encode())   # a reason: a line for the log
    elif isinstance(message, Announce):
        key, channel = message.db_key.encode(), message.channel.encode()
        out = b"A" + _ANNOUNCE.pack(len(key), len(channel)) + key + channel + message.payload.encode()
    elif isinstance(message, Resync):
        out = b"R" + message.reason.encode()
    else:
        raise TypeError(f"not an inbox message: {type(message).__name__}")
    return out


def encode_handoff(source: Source, arrived: float, data: bytes) -> bytes:
    """encode(Handoff(source, arrived, data)) without making the Handoff: the dispatcher's path for
    every message it hands over. ValueError (or struct.error, from encode: ValueError) as encode."""
    socket = source.socket
    proto, socket_proto = _proto_code(source.proto), _proto_code(socket.proto)
    socket_host, remote_host = socket.host.encode(), source.remote_host.encode()
    session = b"" if source.tls is None else _encode_session(source.tls)
    # Over 255 bytes: the struct's "B" fields refuse it (struct.error).
    conn = 0 if source.conn_id is None else source.conn_id + 1
    header = _HANDOFF.pack(arrived, proto | (_WITH_TLS if session else 0), socket_proto, socket.port,
                           source.remote_port, conn, len(socket_host), len(remote_host))
    return b"H" + header + socket_host + remote_host + session + data


def _proto_code(proto: str) -> int:
    code = _PROTO_CODES.get(proto)
    if code is None:
        raise ValueError(f"cannot hand off a message of transport {proto!r}")
    return code


def _encode_session(session: TlsSession) -> bytes:
    cert = session.peer_cert or b""
    if len(cert) > MAX_PEER_CERT:
        raise ValueError(f"a peer certificate of {len(cert)} bytes (at most {MAX_PEER_CERT})")
    names = [session.version.encode(), session.cipher.encode(), session.description.encode(),
             session.domain.encode()]
    flags = (_VERIFIED if session.verified else 0) | (_SERVER_SIDE if session.server_side else 0)
    head = _TLS_SESSION.pack(*(len(n) for n in names), session.bits, len(cert), flags)
    return head + b"".join(names) + cert


def _host_bytes(host: str) -> bytes:
    raw = host.encode()
    if len(raw) > 255:
        raise ValueError(f"host name of {len(raw)} bytes (at most 255)")
    return raw


def decode(datagram: bytes) -> InboxMessage:
    """The message in one inbox datagram; MessageDecodeError saying what is wrong otherwise."""
    if not datagram:
        raise MessageDecodeError("empty inbox datagram")
    kind = _KINDS.get(datagram[0])
    if kind is None:
        raise MessageDecodeError(f"unknown inbox message kind 0x{datagram[0]:02x} ({len(datagram)} bytes)")
    try:
        if kind == "Handoff":
            return _decode_handoff(datagram)
        if kind == "TcpSend":
            conn_id, port, host_len, proto, report_to = _TCP_SEND.unpack_from(datagram, 1)
            if proto >= len(_PROTOS):
                raise MessageDecodeError(f"TcpSend with unknown transport code {proto}")
            at = 1 + _TCP_SEND.size
            host = _text(datagram, at, host_len, "TcpSend host")
            return TcpSend(conn_id, datagram[at + host_len:], host, port, _PROTOS[proto], report_to)
        if kind == "SendFailed":
            return _decode_send_failed(datagram)
        if kind == "Announce":
            key_len, channel_len = _ANNOUNCE.unpack_from(datagram, 1)
            at = 1 + _ANNOUNCE.size
            key = _text(datagram, at, key_len, "Announce db_key")
            channel = _text(datagram, at + key_len, channel_len, "Announce channel")
            at += key_len + channel_len
            return Announce(key, channel, _text(datagram, at, len(datagram) - at, "Announce payload"))
        return Resync(_text(datagram, 1, len(datagram) - 1, "Resync reason"))
    except struct.error:
        raise MessageDecodeError(f"{kind} datagram of {len(datagram)} bytes is shorter than its "
                                 "header") from None


def _decode_send_failed(datagram: bytes) -> SendFailed:
    proto, port, host_len, method_len, branch_len = _SEND_FAILED.unpack_from(datagram, 1)
    if proto >= len(_PROTOS):
        raise MessageDecodeError(f"SendFailed with unknown transport code {proto}")
    at = 1 + _SEND_FAILED.size
    host = _text(datagram, at, host_len, "SendFailed host")
    at += host_len
    method = _text(datagram, at, method_len, "SendFailed method")
    at += method_len
    branch = _text(datagram, at, branch_len, "SendFailed branch")
    at += branch_len
    reason = _text(datagram, at, len(datagram) - at, "SendFailed reason")
    return SendFailed(branch, method, _PROTOS[proto], host, port, reason)


def _decode_handoff(datagram: bytes) -> Handoff:
    arrived, proto, _, _, _, _, socket_len, remote_len = _HANDOFF.unpack_from(datagram, 1)
    at = 1 + _HANDOFF.size + socket_len + remote_len
    if not proto & _WITH_TLS:
        key = datagram[_SOURCE_AT:at]
        source = _SOURCES.get(key)
        if source is None:
            source = _decode_source(datagram, None)
            if len(_SOURCES) >= MEMO_SIZE:
                _SOURCES.clear()
            _SOURCES[key] = source
        return Handoff(source, arrived, datagram[at:])
    session, at = _decode_session(datagram, at)
    return Handoff(_decode_source(datagram, session), arrived, datagram[at:])


def _decode_source(datagram: bytes, session: TlsSession | None) -> Source:
    _, proto, socket_proto, socket_port, remote_port, conn, socket_len, remote_len = (
        _HANDOFF.unpack_from(datagram, 1))
    proto &= ~_WITH_TLS
    if proto >= len(_PROTOS) or socket_proto >= len(_PROTOS):
        raise MessageDecodeError(f"Handoff with unknown transport codes {proto}/{socket_proto}")
    at = 1 + _HANDOFF.size
    socket_host = _text(datagram, at, socket_len, "Handoff socket host")
    remote_host = _text(datagram, at + socket_len, remote_len, "Handoff remote host")
    socket = SocketInfo(_PROTOS[socket_proto], socket_host, socket_port)
    conn_id = None if conn == 0 else conn - 1
    return Source(_PROTOS[proto], socket, remote_host, remote_port, conn_id, tls=session)


def _decode_session(datagram: bytes, at: int) -> tuple[TlsSession, int]:
    """The TLS session at `at`, and where the message starts after it."""
    *lengths, bits, cert_len, flags = _TLS_SESSION.unpack_from(datagram, at)
    at += _TLS_SESSION.size
    names = []
    for length, what in zip(lengths, ("version", "cipher", "description", "domain"), strict=True):
        names.append(_text(datagram, at, length, f"Handoff TLS {what}"))
        at += length
    if at + cert_len > len(datagram):
        raise MessageDecodeError(f"Handoff TLS certificate runs past the end of a {len(datagram)}-byte "
                                 "datagram")
    cert = datagram[at:at + cert_len] or None
    version, cipher, description, domain = names
    session = TlsSession(version=version, cipher=cipher, description=description, bits=bits, peer_cert=cert,
                         verified=bool(flags & _VERIFIED), domain=domain,
                         server_side=bool(flags & _SERVER_SIDE))
    return session, at + cert_len


def _text(datagram: bytes, at: int, length: int, what: str) -> str:
    if at + length > len(datagram):
        raise MessageDecodeError(f"{what} runs past the end of a {len(datagram)}-byte datagram")
    try:
        return datagram[at:at + length].decode()
    except UnicodeDecodeError:
        raise MessageDecodeError(f"{what} is not UTF-8") from None
