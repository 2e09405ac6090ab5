"""Message pseudo-variables: the Request-URI (current, original, destination), From/To, headers
($hdr, $hdrcnt, $ct...) and the request/reply parts ($ci $cs $rm $rs $rr $rb $ml $mb)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from routescript.sip import ParseError, SIPRequest, SIPResponse, parse_uri

from .context import MsgContext
from .transforms import nameaddr_name, nameaddr_uri

from .pv_common import _default_port, _none_if_empty, _pick, _request, _script_value, _text, _transport


# ---------------------------------------------------------------------------------------------------
# Request-URI: $ru $rU $rd $rp $rP $rz, original $ou $oU $od $op $oP, destination $du $dd $dp $dP

_ORIG_RURI = "core.orig_ruri"


def _remember_original(ctx: MsgContext, msg: Any) -> None:
    # $ou is the R-URI the message arrived with; keep it before the first change made through us.
    ctx.extra.setdefault(_ORIG_RURI, msg.ruri)


def _original_ruri(ctx: MsgContext, msg: Any) -> str:
    orig = ctx.extra.get(_ORIG_RURI)
    ruri: str = orig if orig is not None else msg.ruri
    return ruri


def _valid_uri(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} needs a URI string")
    try:
        parse_uri(value)
    except ParseError:
        raise ValueError(f"{what}: not a valid URI: {value!r}") from None
    return value


def get_ruri(ctx: MsgContext, key: Any, index: Any) -> str | None:
    msg: Any = ctx.msg   # _request(ctx) in place (is_request tested): $ru is read for most requests
    return None if msg is None or not msg.is_request else msg.ruri


def set_ruri(ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
    msg = _request(ctx)
    if msg is None:
        raise ValueError("$ru: no request to change")
    new = _valid_uri(value, "$ru")
    _remember_original(ctx, msg)
    msg.ruri = new


def _set_ruri_parts(ctx: MsgContext, what: str, **changes: Any) -> None:
    msg = _request(ctx)
    if msg is None:
        raise ValueError(f"{what}: no request to change")
    new = str(dataclasses.replace(msg.uri, **changes))
    _valid_uri(new, what)
    _remember_original(ctx, msg)
    msg.ruri = new


def _ruri_attr(attr: str) -> Callable[[MsgContext, Any, Any], Any]:
    def getter(ctx: MsgContext, key: Any, index: Any) -> Any:
        msg = _request(ctx)
        return None if msg is None else _uri_attr(msg.uri, attr)

    return getter


def _uri_attr(uri: Any, attr: str) -> Any:
    if attr == "user":
        return _none_if_empty(uri.user)
    if attr == "host":
        return _none_if_empty(uri.host)
    if attr == "port":
        return _default_port(uri)
    if attr == "transport":
        return _transport(uri)
    if attr == "scheme":
        return uri.scheme
    raise AssertionError(attr)


def set_ruri_user(ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
    """`$rU = NULL` removes the user part, as OpenSIPS's SET_USER with "" does."""
    user = None if value in (None, "") else _text(_script_value(value))
    # user-unreserved allows ";" ("+4930;npdi"); the rebuilt URI is parsed again before it is used.
    if user is not None and any(c in user for c in "@: \t<>\r\n"):
        raise ValueError(f"$rU: bad user part {user!r}")
    if user is None:
        _set_ruri_parts(ctx, "$rU", user=None, password=None)
    else:
        _set_ruri_parts(ctx, "$rU", user=user)


def set_ruri_host(ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
    if value in (None, ""):
        raise ValueError("$rd: the host cannot be removed")
    host = _text(_script_value(value))
    if any(c in host for c in "@;? \t<>\r\n/"):
        raise ValueError(f"$rd: bad host {host!r}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address becomes an IPv6 reference (RFC 3261 25.1)
    _set_ruri_parts(ctx, "$rd", host=host)


def _port_value(value: Any, what: str) -> int | None:
    if value in (None, "", 0):
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: bad port {value!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{what}: port {port} out of range")
    return port


def set_ruri_port(ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
    """`$rp = NULL` (or 0) removes the port."""
    _set_ruri_parts(ctx, "$rp", port=_port_value(value, "$rp"))


def get_ouri(ctx: MsgContext, key: Any, index: Any) -> str | None:
    msg = _request(ctx)
    return None if msg is None else _original_ruri(ctx, msg)


def _ouri_attr(attr: str) -> Callable[[MsgContext, Any, Any], Any]:
    def getter(ctx: MsgContext, key: Any, index: Any) -> Any:
        msg = _request(ctx)
        if msg is None:
            return None
        orig = _original_ruri(ctx, msg)
        uri = msg.uri if orig == msg.ruri else parse_uri(orig)
        return _uri_attr(uri, attr)

    return getter


def get_duri(ctx: MsgContext, key: Any, index: Any) -> str | None:
    return ctx.dst_uri


def set_duri(ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
    """`$du = NULL` resets the destination (OpenSIPS's resetdsturi())."""
    ctx.dst_uri = None if value is None else _valid_uri(value, "$du")


def _duri_attr(attr: str) -> Callable[[MsgContext, Any, Any], Any]:
    def getter(ctx: MsgContext, key: Any, index: Any) -> Any:
        if not ctx.dst_uri:
            return None
        try:
            uri = parse_uri(ctx.dst_uri)
        except ParseError:
            return None  # $du is ours (checked when set), not the peer's: no 400 for it
        return _uri_attr(uri, attr)

    return getter


# ---------------------------------------------------------------------------------------------------
# From / To: $fu $fU $fd $fn $ft, $tu $tU $td $tn $tt

def _na_attr(which: str, attr: str) -> Callable[[MsgContext, Any, Any], Any]:
    header = "From" if which == "from" else "To"

    def getter(ctx: MsgContext, key: Any, index: Any) -> Any:
        msg = ctx.msg
        if msg is None:
            return None
        na = msg.from_ if which == "from" else msg.to
        if na is None:
            return None
        if attr == "uri":
            return str(na.uri)
        if attr == "user":
            return _none_if_empty(na.uri.user)
        if attr == "host":
            return _none_if_empty(na.uri.host)
        if attr == "tag":
            return _none_if_empty(na.tag)
        if attr == "display":
            if na.display is None:
                return None
            # As OpenSIPS: the display name as written, a quoted one with its quotes.
            try:
                return nameaddr_name(msg.header(header)) or na.display
            except ValueError:
                return na.display
        raise AssertionError(attr)

    return getter


# ---------------------------------------------------------------------------------------------------
# headers: $hdr(name), $hdrcnt(name), $ct, $ct.fields(f), $ua, $ai, $rt, $cT, $cl

def get_hdr(ctx: MsgContext, key: str | None, index: Any) -> str | None:
    """$hdr(Name): the body of the first `Name` header line; $(hdr(Name)[n]) the n-th line;
    [*] every line joined by ", ". Lines, not comma-separated values (OpenSIPS $hdr/$hdrcnt)."""
    msg = ctx.msg
    if msg is None or key is None:   # the loader gives $hdr its name; None only from a hand-made call
        return None
    if index is None:
        first: str | None = msg.header(key)
        return first
    picked: str | None = _pick(msg.header_all(key), index)
    return picked


def get_hdrcnt(ctx: MsgContext, key: str | None, index: Any) -> int | None:
    msg = ctx.msg
    if msg is None or key is None:
        return None
    return len(msg.header_all(key))


def _contacts(ctx: MsgContext) -> tuple[list[Any], list[str]]:
    """(parsed Contact values, the same values as written)."""
    msg = ctx.msg
    if msg is None:
        return [], []
    parsed = msg.contacts  # a bad Contact raises ParseError here
    raw = msg.header_values("Contact")
    if len(raw) != len(parsed):  # cannot happen with one splitter; fall back to the parsed form
        raw = [str(c) for c in parsed]
    return parsed, raw


def get_ct(ctx: MsgContext, key: Any, index: Any) -> str | None:
    """$ct: a Contact value as written ("*" for a star Contact)."""
    _, raw = _contacts(ctx)
    picked: str | None = _pick(raw, index)
    return picked


CT_FIELDS = ("name", "uri", "q", "expires", "methods", "received", "params")


def _ct_field(contact: Any, raw: str, field: str) -> Any:
    if contact.star:
        return None
    na = contact.name_addr
    if field == "uri":
        return str(na.uri)
    if field == "name":
        if na.display is None:
            return None
        try:
            return nameaddr_name(raw) or na.display
        except ValueError:
            return na.display
    if field == "params":
        return ";".join(n if v is None else f"{n}={v}" for n, v in na.params) or None
    return _none_if_empty(contact.param(field))


def get_ct_fields(ctx: MsgContext, key: str | None, index: Any) -> Any:
    """$ct.fields(name|uri|q|expires|methods|received|params) of the first (or indexed) Contact."""
    parsed, raw = _contacts(ctx)
    values = [_ct_field(c, r, key) for c, r in zip(parsed, raw, strict=True)]  # type: ignore[arg-type]
    return _pick(values, index)


def _check_ct_field(key: str) -> None:
    if key not in CT_FIELDS:
        raise ValueError(f"unknown $ct.fields field {key!r} (expected one of {', '.join(CT_FIELDS)})")


def _header_getter(name: str) -> Callable[[MsgContext, Any, Any], Any]:
    def getter(ctx: MsgContext, key: Any, index: Any) -> Any:
        msg = ctx.msg
        return None if msg is None else msg.header(name)

    return getter


def _header_uri_getter(name: str) -> Callable[[MsgContext, Any, Any], Any]:
    """The URI of a name-addr header such as P-Asserted-Identity ($ai) or Refer-To ($rt)."""

    def getter(ctx: MsgContext, key: Any, index: Any) -> Any:
        msg = ctx.msg
        if msg is None:
            return None
        values = msg.header_values(name)
        if not values:
            return None
        try:
            uri = nameaddr_uri(values[0])
            parse_uri(uri)
        except (ValueError, ParseError):
            raise ParseError(f"Bad {name} header") from None
        return uri

    return getter


def get_content_length(ctx: MsgContext, key: Any, index: Any) -> int | None:
    """$cl: the Content-Length header's value, None when absent (a bad one raises ParseError)."""
    return None if ctx.msg is None else ctx.msg.content_length


# ---------------------------------------------------------------------------------------------------
# message: $ci $cs $rm $rs $rr $rb $ml $mb

def get_call_id(ctx: MsgContext, key: Any, index: Any) -> str | None:
    return None if ctx.msg is None else ctx.msg.call_id


def get_cseq(ctx: MsgContext, key: Any, index: Any) -> int | None:
    return None if ctx.msg is None else ctx.msg.cseq.number


def get_method(ctx: MsgContext, key: Any, index: Any) -> str | None:
    """$rm: the request method; for a reply, the method of its CSeq (as OpenSIPS)."""
    msg = ctx.msg
    if msg is None:
        return None
    method: str = msg.method if isinstance(msg, SIPRequest) else msg.cseq.method
    return method


def get_status(ctx: MsgContext, key: Any, index: Any) -> int | None:
    msg = ctx.msg
    return msg.status if isinstance(msg, SIPResponse) else None


def get_reason(ctx: MsgContext, key: Any, index: Any) -> str | None:
    msg = ctx.msg
    return msg.reason if isinstance(msg, SIPResponse) else None


def get_body(ctx: MsgContext, key: Any, index: Any) -> str | None:
    """$rb: the body as text (UTF-8, undecodable bytes replaced); None when there is none."""
    msg = ctx.msg
    if msg is None or not msg.body:
        return None
    return bytes(msg.body).decode("utf-8", "replace")


def get_msg_len(ctx: MsgContext, key: Any, index: Any) -> int | None:
    return None if ctx.msg is None else len(ctx.msg.to_bytes())


def get_msg_buf(ctx: MsgContext, key: Any, index: Any) -> str | None:
    return None if ctx.msg is None else ctx.msg.to_bytes().decode("utf-8", "replace")
