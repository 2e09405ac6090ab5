"""Pseudo-variables of the message's surroundings: transport ($si $sp $Ri $Rp $pr $af), the error that
reached error_route ($err.*), the transaction's reply code ($T_reply_code), time ($Ts $Tsm $Tf $time)
and the process environment ($env(NAME))."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

from routescript.sip import SIPResponse

from .context import MsgContext
from .registry import PVarSpec

from .pv_common import Clock


# ---------------------------------------------------------------------------------------------------
# network: $si $sp $Ri $Rp $pr/$proto

def get_src_ip(ctx: MsgContext, key: Any, index: Any) -> str | None:
    return None if ctx.source is None else ctx.source.remote_host


def get_src_port(ctx: MsgContext, key: Any, index: Any) -> int | None:
    return None if ctx.source is None else ctx.source.remote_port


def get_rcv_ip(ctx: MsgContext, key: Any, index: Any) -> str | None:
    return None if ctx.source is None or ctx.source.socket is None else ctx.source.socket.host


def get_rcv_port(ctx: MsgContext, key: Any, index: Any) -> int | None:
    return None if ctx.source is None or ctx.source.socket is None else ctx.source.socket.port


def get_af(ctx: MsgContext, key: Any, index: Any) -> str | None:
    """$af: the address family the message came over, "INET" or "INET6" (OpenSIPS 2.4-3.2; 3.3 moved it
    to $socket_in(af)). What a 2.x `af == INET6` test reads."""
    if ctx.source is None:
        return None
    return "INET6" if ":" in ctx.source.remote_host else "INET"


# $socket_in(field): the fields routescript's sockets have (OpenSIPS also has advertised_ip/_port, tag,
# anycast, which a SocketInfo does not carry); $socket_in alone is proto:ip:port.
SOCKET_IN_FIELDS = ("ip", "port", "proto", "af")


def check_socket_in_field(key: str) -> None:
    if key not in SOCKET_IN_FIELDS:
        raise ValueError(f"unknown field '{key}' (routescript has {', '.join(SOCKET_IN_FIELDS)})")


def get_socket_in(ctx: MsgContext, key: str | None, index: Any) -> str | int | None:
    """$socket_in / $socket_in(ip|port|proto|af): the socket the message came in on."""
    sock = None if ctx.source is None else ctx.source.socket
    if sock is None:
        return None
    if key is None:
        return sock.name
    if key == "ip":
        return sock.host
    if key == "port":
        return sock.port
    if key == "proto":
        return str(sock.proto).lower()
    return "INET6" if ":" in sock.host else "INET"  # af


def get_proto(ctx: MsgContext, key: Any, index: Any) -> str | None:
    """$pr/$proto: "udp", "tcp"... (OpenSIPS prints the protocol module's lower-case name)."""
    return None if ctx.source is None else str(ctx.source.proto).lower()


# OpenSIPS errinfo.h: class 1 = parse error; level 2 = medium severity.
_ERR_CLASS_PARSER = 1
_ERR_LEVEL_MEDIUM = 2


def _err_attr(attr: str) -> Callable[[MsgContext, Any, Any], Any]:
    def getter(ctx: MsgContext, key: Any, index: Any) -> Any:
        err = ctx.error
        if err is None:
            return None
        reason = getattr(err, "reason", None) or str(err)
        if attr == "class":
            return _ERR_CLASS_PARSER
        if attr == "level":
            return _ERR_LEVEL_MEDIUM
        if attr == "info":
            return f"error parsing message: {reason}"
        if attr == "rcode":
            return int(getattr(err, "status", 400))
        if attr == "rreason":
            return reason
        raise AssertionError(attr)

    return getter


def get_reply_code(ctx: MsgContext, key: Any, index: Any) -> int | None:
    """$T_reply_code: the winning reply code in failure/onreply routes (the reply's own status in an
    onreply route when the transaction layer did not set one)."""
    if ctx.reply_code is not None:
        return ctx.reply_code
    msg = ctx.msg
    return msg.status if isinstance(msg, SIPResponse) else None


# ---------------------------------------------------------------------------------------------------
# time: $Ts $Tsm $Tf $time(format)

def _time_pvars(clock: Clock) -> list[PVarSpec]:
    def get_ts(ctx: MsgContext, key: Any, index: Any) -> int:
        return int(clock())

    def get_tsm(ctx: MsgContext, key: Any, index: Any) -> int:
        return round((clock() % 1) * 1_000_000) % 1_000_000

    def get_tf(ctx: MsgContext, key: Any, index: Any) -> str:
        return time.ctime(int(clock()))

    def get_time(ctx: MsgContext, key: str | None, index: Any) -> str:
        return time.strftime(key or "", time.localtime(int(clock())))

    def check_format(key: str) -> None:
        if not key:
            raise ValueError("$time() needs a strftime format")
        try:
            time.strftime(key, time.localtime(0))
        except ValueError as exc:
            raise ValueError(f"bad $time format {key!r}: {exc}") from None

    return [
        PVarSpec("Ts", get_ts),
        PVarSpec("Tsm", get_tsm),
        PVarSpec("Tf", get_tf),
        PVarSpec("time", get_time, key="required", check_key=check_format),
    ]


# ---------------------------------------------------------------------------------------------------
# $env(NAME): OpenSIPS's cfgutils pseudo-variable, read-only. Read when the script runs, as OpenSIPS's
# getenv(); an unset variable is $null, as there (a modparam's $env(NAME) is instead a load-time error:
# routescript/core/environ.py).

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_env_name(key: str) -> None:
    if not _ENV_NAME.match(key):
        raise ValueError(f"$env({key}): not an environment variable name")


def get_env(ctx: MsgContext, key: str | None, index: Any) -> str | None:
    return os.environ.get(key) if key else None
