"""Script functions of the OpenSIPS core that live outside any module: xlog/xdbg (core since
OpenSIPS 2.x; `loadmodule "xlog.so"` still loads for older scripts) and is_myself(uri)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from routescript.script.context import MsgContext
from routescript.script.registry import ArgSpec, FunctionSpec, function

from .config import L_DBG, L_ERR, LOG_LEVEL_NAMES
from .log import py_level

if TYPE_CHECKING:
    from .host import ModuleHost

xlog_logger = logging.getLogger("routescript.xlog")

# OpenSIPS: "what really matters is the third letter of the value" (L_A.., L_C.., L_E.., ...).
_BY_THIRD_LETTER = {"A": -3, "C": -2, "E": -1, "W": 1, "N": 2, "I": 3, "D": 4}


def xlog_level_of(value: object, default: int = L_ERR) -> int:
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
    server: ModuleHost | None = ctx.server
    if server is not None:
        return int(server.config.get("xlog_print_level"))
    return L_ERR


# The arguments of script functions are script values (str or int, as the script wrote them): Any.
def xlog(ctx: MsgContext, first: Any, second: Any = None) -> int:
    """xlog([level,] format): the format arrives with its pseudo-variables already expanded."""
    if second is None:
        level, text = _print_level(ctx), first
    else:
        level, text = xlog_level_of(first), second
    xlog_logger.log(py_level(level), "%s", str(text).rstrip("\r\n"))
    return 1


def _xlog_guard(literals: tuple[Any, ...]) -> Callable[[], bool] | None:
    """xlog(level, format) with a literal level: skip the call (and the expansion of its format)
    while the routescript.xlog logger would drop the line. The level is read at each call, so MI
    log_level changes apply at once."""
    if len(literals) < 2 or literals[0] is None:
        return None
    level = py_level(xlog_level_of(literals[0]))
    return lambda: xlog_logger.isEnabledFor(level)


def xdbg(ctx: MsgContext, text: Any) -> int:
    xlog_logger.log(py_level(L_DBG), "%s", str(text).rstrip("\r\n"))
    return 1


def is_myself(ctx: MsgContext, target: Any, port: Any = None) -> int:
    """is_myself(uri | host[:port] [, port]): 1 when it names one of our sockets or an alias= (OpenSIPS
    check_self). The shipped OpenSIPS scripts pass a bare domain (is_myself("$rd")); a URI is taken
    too. Without a port only the host is compared; a URI without a port means 5060 (5061 for sips)."""
    from routescript.sip import ParseError, parse_uri

    server: ModuleHost | None = ctx.server
    text = str(target or "").strip()
    if server is None or not text:
        return -1
    want_port: int | None = None
    if ":" in text and text.split(":", 1)[0].lower() in ("sip", "sips", "tel"):
        try:
            u = parse_uri(text)
        except ParseError:
            return -1
        host = u.host
        want_port = u.port or (5061 if u.scheme == "sips" else 5060)
    else:
        host = text
        if text.startswith("["):  # [v6]:port
            end = text.find("]")
            host, rest = text[:end + 1], text[end + 1:]
            if rest.startswith(":") and rest[1:].isdigit():
                want_port = int(rest[1:])
        elif text.count(":") == 1:
            h, _, p = text.partition(":")
            if p.isdigit():
                host, want_port = h, int(p)
    if port not in (None, ""):
        try:
            want_port = int(port)
        except (TypeError, ValueError):
            return -1
    return 1 if server.is_myself(host, want_port) else -1


def core_functions() -> list[FunctionSpec]:
    return [
        function("xlog", xlog, ArgSpec("str", name="level_or_format"),
                 ArgSpec("str", optional=True, name="format"), guard=_xlog_guard),
        function("xdbg", xdbg, ArgSpec("str", name="format"),
                 guard=lambda literals: lambda: xlog_logger.isEnabledFor(logging.DEBUG)),
        function("is_myself", is_myself, ArgSpec("str", name="uri_or_host"),
                 ArgSpec("int", optional=True, name="port")),
    ]
