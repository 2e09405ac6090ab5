"""What workers send each other through their inboxes: small frozen values, each one datagram of
one-byte kind + fixed struct header + variable parts (never pickle: a datagram is data, not code).

    Handoff  b"H"  a SIP message read by one worker for another: its Source, when it was read, its bytes
    TcpSend  b"T"  bytes to write on a TCP connection the receiving worker holds (docs/workers.md 4)
    Announce b"A"  a change-feed notification (db_key, channel, payload) (docs/workers.md 3, feed B)
    Resync   b"R"  "you may have missed announcements": re-read what your watchers follow

`decode` of anything else raises MessageDecodeError saying what is wrong; `encode` refuses values that
do not fit (ValueError): both sides are our code, so either is a bug to log, never a crash of the reader.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from routescript.sip.address import TCP, UDP, SocketInfo, Source

__all__ = ["MAX_DATAGRAM", "MAX_PAYLOAD", "Announce", "Handoff", "InboxMessage", "MessageDecodeError",
           "Resync", "TcpSend", "decode", "encode", "encode_handoff"]

MAX_PAYLOAD = 65536                 # the largest SIP message (TransportLayer.max_message_size default)
MAX_DATAGRAM = MAX_PAYLOAD + 1024   # with the biggest header: two hosts of at most 255 bytes and change


class MessageDecodeError(ValueError):
    """An inbox datagram that is not one of our messages."""


@dataclass(frozen=True, slots=True)
class Handoff:
    source: Source      # as the reading worker built it (conn_id global: slot << 48 | local id)
    arrived: float      # time.monotonic() when read: one clock for every process on Linux
    data: bytes


@dataclass(frozen=True, slots=True)
class TcpSend:
    """Write `data` on connection `conn_id`; when it is closed, send to remote_host:remote_port over
    another connection (the fallback a closed connection gets in one process)."""

    conn_id: int
    data: bytes
    remote_host: str = ""
    remote_port: int = 0


@dataclass(frozen=True, slots=True)
class Announce:
    db_key: str
    channel: str
    payload: str


@dataclass(frozen=True, slots=True)
class Resync:
    reason: str


InboxMessage = Handoff | TcpSend | Announce | Resync

_PROTO_CODES = {UDP: 0, TCP: 1}
_PROTOS = (UDP, TCP)
# Handoff: proto, socket proto, socket port, remote port, conn_id + 1 (0: none), arrived,
#          socket host length, remote host length; then the two hosts and the message.
_HANDOFF = struct.Struct("!BBHHQdBB")
_TCP_SEND = struct.Struct("!QHB")         # conn_id, fallback port, fallback host length; host; data
_ANNOUNCE = struct.Struct("!HH")          # db_key length, channel length; db_key, channel, payload
_KINDS = {b"H"[0]: "Handoff", b"T"[0]: "TcpSend", b"A"[0]: "Announce", b"R"[0]: "Resync"}


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
        out = b"T" + _TCP_SEND.pack(message.conn_id, message.remote_port, len(host)) + host + message.data
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
    if source.proto not in _PROTO_CODES or socket.proto not in _PROTO_CODES:
        raise ValueError(f"cannot hand off a message from {source.proto}/{socket.proto}")
    socket_host, remote_host = socket.host.encode(), source.remote_host.encode()
    # Over 255 bytes: the struct's "B" fields refuse it (struct.error).
    conn = 0 if source.conn_id is None else source.conn_id + 1
    header = _HANDOFF.pack(_PROTO_CODES[source.proto], _PROTO_CODES[socket.proto], socket.port,
                           source.remote_port, conn, arrived, len(socket_host), len(remote_host))
    return b"H" + header + socket_host + remote_host + data


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
            conn_id, port, host_len = _TCP_SEND.unpack_from(datagram, 1)
            at = 1 + _TCP_SEND.size
            host = _text(datagram, at, host_len, "TcpSend host")
            return TcpSend(conn_id, datagram[at + host_len:], host, port)
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


def _decode_handoff(datagram: bytes) -> Handoff:
    proto, socket_proto, socket_port, remote_port, conn, arrived, socket_len, remote_len = (
        _HANDOFF.unpack_from(datagram, 1))
    if proto >= len(_PROTOS) or socket_proto >= len(_PROTOS):
        raise MessageDecodeError(f"Handoff with unknown transport codes {proto}/{socket_proto}")
    at = 1 + _HANDOFF.size
    socket_host = _text(datagram, at, socket_len, "Handoff socket host")
    remote_host = _text(datagram, at + socket_len, remote_len, "Handoff remote host")
    socket = SocketInfo(_PROTOS[socket_proto], socket_host, socket_port)
    source = Source(_PROTOS[proto], socket, remote_host, remote_port, None if conn == 0 else conn - 1)
    return Handoff(source, arrived, datagram[at + socket_len + remote_len:])


def _text(datagram: bytes, at: int, length: int, what: str) -> str:
    if at + length > len(datagram):
        raise MessageDecodeError(f"{what} runs past the end of a {len(datagram)}-byte datagram")
    try:
        return datagram[at:at + length].decode()
    except UnicodeDecodeError:
        raise MessageDecodeError(f"{what} is not UTF-8") from None
