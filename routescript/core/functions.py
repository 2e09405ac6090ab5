"""Script functions of the OpenSIPS core that live outside any module: xlog/xdbg (core since
OpenSIPS 2.x; `loadmodule "xlog.so"` still loads for older scripts) and is_myself(uri)."""

from __future__ import annotations

import logging
from typing import Any

from routescript.script.context import MsgContext
from routescript.script.registry import ArgSpec, FunctionSpec, function

from .config import L_DBG, L_ERR, LOG_LEVEL_NAMES
from .log import py_level

xlog_logger = logging.getLogger("routescript.xlog")

# OpenSIPS: "what really matters is the third letter of the value" (L_A.., L_C.., L_E.., ...).
_BY_THIRD_LETTER = {"A": -3, "C": -2, "E": -1, "W": 1, "N": 2, "I": 3, "D": 4}


def xlog_level_of(value: Any, default: int = L_ERR) -> int:
    """"L_INFO" / 3 / "3" -> 3. Unknown text -> default (logged once by the caller's line)."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text in LOG_LEVEL_NAMES:
        return LOG_LEVEL_NAMES[text]
    try:
        return int(text)
    except ValueError:
        pass
    if len(text) >= 3 and text[:2].upper() == "L_":
        return _BY_THIRD_LETTER.get(text[2].upper(), default)
    return default


def _print_level(ctx: MsgContext) -> int:
    server = ctx.server
    if server is not None and getattr(server, "config", None) is not None:
        return int(server.config.get("xlog_print_level"))
    return L_ERR


def xlog(ctx: MsgContext, first: Any, second: Any = None) -> int:
    """xlog([level,] format): the format arrives with its pseudo-variables already expanded."""
    if second is None:
        level, text = _print_level(ctx), first
    else:
        level, text = xlog_level_of(first), second
    xlog_logger.log(py_level(level), "%s", str(text).rstrip("\r\n"))
    return 1


def xdbg(ctx: MsgContext, text: Any) -> int:
    xlog_logger.log(py_level(L_DBG), "%s", str(text).rstrip("\r\n"))
    return 1


def is_myself(ctx: MsgContext, uri: Any) -> int:
    """1 when the URI's host:port is one of our sockets or an alias= (OpenSIPS check_self; a URI
    without a port means 5060, 5061 for sips)."""
    from routescript.sip import ParseError, parse_uri

    try:
        u = parse_uri(str(uri))
    except ParseError:
        return -1
    server = ctx.server
    if server is None:
        return -1
    port = u.port or (5061 if u.scheme == "sips" else 5060)
    return 1 if server.is_myself(u.host, port) else -1


def core_functions() -> list[FunctionSpec]:
    return [
        function("xlog", xlog, ArgSpec("str", name="level_or_format"), ArgSpec("str", optional=True, name="format")),
        function("xdbg", xdbg, ArgSpec("str", name="format")),
        function("is_myself", is_myself, ArgSpec("str", name="uri")),
    ]
