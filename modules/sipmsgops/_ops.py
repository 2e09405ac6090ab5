"""The header and method operations sipmsgops exports (and textops, for OpenSIPS 1.x/2.x scripts that
still find them there). Return values follow OpenSIPS: 1 true, -1 false."""

from __future__ import annotations

import fnmatch
import logging
import re
from typing import Any

from routescript.script.context import MsgContext

log = logging.getLogger("routescript.sipmsgops")

# header-name = token (RFC 3261 25.1)
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


def methods_fixup(value: Any) -> Any:
    """is_method("INVITE|SUBSCRIBE") -> frozenset of upper-case names, checked at load time."""
    names = [m.strip() for m in str(value).split("|")]
    if not names or any(not _TOKEN.match(m) for m in names):
        raise ValueError(f"bad method list \"{value}\" (expected METHOD or A|B)")
    return frozenset(m.upper() for m in names)


def header_name_fixup(value: Any) -> Any:
    name = str(value).strip()
    if not _TOKEN.match(name):
        raise ValueError(f"bad header name \"{value}\"")
    return name


def header_line_fixup(value: Any) -> Any:
    text = str(value)
    if "$" not in text:
        split_header_line(text)  # raises ValueError
    return value


def split_header_line(text: str) -> tuple[str, str]:
    """"P-Hint: foo\\r\\n" -> ("P-Hint", "foo"). The CRLF OpenSIPS scripts add is optional here."""
    line = text.replace("\\r\\n", "").rstrip("\r\n")
    if "\r" in line or "\n" in line:
        raise ValueError(f"one header line expected, got \"{text}\"")
    name, sep, value = line.partition(":")
    if not sep or not _TOKEN.match(name.strip()):
        raise ValueError(f"bad header line \"{text}\" (expected \"Name: value\")")
    return name.strip(), value.strip()


def is_method(ctx: MsgContext, methods: Any) -> int:
    wanted = methods if isinstance(methods, frozenset) else methods_fixup(methods)
    msg = ctx.msg
    if msg is None:
        return -1
    method = msg.method if msg.is_request else msg.cseq.method
    return 1 if method.upper() in wanted else -1


def has_totag(ctx: MsgContext) -> int:
    if ctx.msg is None:
        return -1
    return 1 if ctx.msg.to.tag else -1


def is_present_hf(ctx: MsgContext, name: str) -> int:
    if ctx.msg is None:
        return -1
    return 1 if ctx.msg.has_header(name) else -1


def append_hf(ctx: MsgContext, text: str) -> int:
    try:
        name, value = split_header_line(text)
    except ValueError as exc:
        log.error("append_hf: %s", exc)
        return -1
    ctx.msg.add_header(name, value)
    return 1


def insert_hf(ctx: MsgContext, text: str) -> int:
    try:
        name, value = split_header_line(text)
    except ValueError as exc:
        log.error("insert_hf: %s", exc)
        return -1
    ctx.msg.add_header(name, value, first=True)
    return 1


def remove_hf(ctx: MsgContext, name: str, flags: str | None = None) -> int:
    """remove_hf(name[, flags]): flags "r" = name is a regex, "g" = a glob (OpenSIPS 3.x)."""
    msg = ctx.msg
    if msg is None:
        return -1
    if not flags:
        return 1 if msg.remove_header(name) > 0 else -1
    if "r" in flags:
        try:
            rx = re.compile(name, re.IGNORECASE)
        except re.error as exc:
            log.error("remove_hf: bad regex %r: %s", name, exc)
            return -1
        match = lambda n: rx.fullmatch(n) is not None  # noqa: E731
    else:
        match = lambda n: fnmatch.fnmatchcase(n.lower(), name.lower())  # noqa: E731
    removed = 0
    for hname in {h.name for h in msg.headers}:
        if match(hname):
            removed += msg.remove_header(hname)
    return 1 if removed > 0 else -1
