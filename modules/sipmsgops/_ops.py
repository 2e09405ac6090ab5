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


def _insert_line(msg: Any, at: int, name: str, value: str) -> None:
    """Insert a header line at position `at` of the head (the message checks it as add_header does)."""
    msg.insert_header(at, name, value)


def _anchor_index(msg: Any, anchor: str) -> int | None:
    """Index of the first header line named `anchor` (compact forms resolved), None when absent."""
    from routescript.sip.headers import header_key

    key = header_key(anchor) or anchor.lower()
    for i, h in enumerate(msg.headers):
        if (header_key(h.name) or h.name.lower()) == key:
            return i
    return None


def append_hf_after(ctx: MsgContext, text: str, anchor: str) -> int:
    """append_hf(txt, hdr): the line goes after the first `hdr` header (at the end when absent,
    choice: OpenSIPS returns -1 then; we do the same and add nothing)."""
    return _insert_at_anchor(ctx, text, anchor, "append_hf", after=True)


def insert_hf_before(ctx: MsgContext, text: str, anchor: str) -> int:
    """insert_hf(txt, hdr): the line goes before the first `hdr` header; -1 when there is none."""
    return _insert_at_anchor(ctx, text, anchor, "insert_hf", after=False)


def _insert_at_anchor(ctx: MsgContext, text: str, anchor: str, what: str, *, after: bool) -> int:
    try:
        name, value = split_header_line(text)
    except ValueError as exc:
        log.error("%s: %s", what, exc)
        return -1
    at = _anchor_index(ctx.msg, anchor)
    if at is None:
        return -1
    _insert_line(ctx.msg, at + 1 if after else at, name, value)
    return 1


def remove_matching(ctx: MsgContext, match: Any) -> int:
    """Remove every header line whose name satisfies match(name); 1 when something was removed."""
    msg = ctx.msg
    if msg is None:
        return -1
    removed = 0
    for hname in {h.name for h in msg.headers}:
        if match(hname):
            removed += msg.remove_header(hname)
    return 1 if removed > 0 else -1


def append_to_reply(ctx: MsgContext, text: str) -> int:
    """append_to_reply(txt): header line(s) for every reply the core sends to this request. Several
    lines may be given separated by CRLF (OpenSIPS takes raw text)."""
    lines = [ln for ln in text.replace("\\r\\n", "\r\n").split("\r\n") if ln.strip()]
    if not lines:
        log.error("append_to_reply: empty text")
        return -1
    pairs = []
    for line in lines:
        try:
            pairs.append(split_header_line(line))
        except ValueError as exc:
            log.error("append_to_reply: %s", exc)
            return -1
    if ctx.reply_headers is None:
        ctx.reply_headers = []
    ctx.reply_headers.extend(pairs)
    return 1


# E.164: '+' then 2 to 15 digits (OpenSIPS's is_e164 bounds: 1 + 2..15 characters)
_E164 = re.compile(r"^\+[0-9]{2,15}$")


def is_uri_user_e164(ctx: MsgContext, uri: str) -> int:
    """1 when the user part of the URI is an E.164 number (+ and 2..15 digits)."""
    from routescript.sip import ParseError, parse_uri

    try:
        user = parse_uri(uri).user or ""
    except ParseError:
        return -1
    return 1 if _E164.match(user) else -1


def ruri_has_param(ctx: MsgContext, name: str, value: str | None = None) -> int:
    msg = ctx.msg
    if msg is None or not msg.is_request:
        return -1
    uri = msg.uri
    if not uri.has_param(name):
        return -1
    if value is None:
        return 1
    return 1 if (uri.param(name) or "") == value else -1


def ruri_add_param(ctx: MsgContext, param: str) -> int:
    """ruri_add_param("name=value"): appended to the R-URI parameters."""
    msg = ctx.msg
    if msg is None or not msg.is_request or not param or any(c in param for c in " \r\n<>"):
        return -1
    ruri = msg.ruri
    head, q, headers = ruri.partition("?")
    msg.ruri = f"{head};{param.lstrip(';')}" + (q + headers if q else "")
    return 1


def ruri_del_param(ctx: MsgContext, name: str) -> int:
    msg = ctx.msg
    if msg is None or not msg.is_request:
        return -1
    head, q, headers = msg.ruri.partition("?")
    parts = head.split(";")
    kept = [parts[0]] + [p for p in parts[1:] if p.split("=", 1)[0].strip().lower() != name.lower()]
    if len(kept) == len(parts):
        return -1
    msg.ruri = ";".join(kept) + (q + headers if q else "")
    return 1
