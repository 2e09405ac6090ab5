"""The core pseudo-variables of the script language (OpenSIPS 3.x "Core Variables").

Each is a `PVarSpec(name, getter, setter, key, check_key)`; `core_pvars()` returns them all for the
registry. Getters are `getter(ctx, key, index)`, setters `setter(ctx, key, index, value)` (registry.py).

Rules kept by every entry:
- the message is read through the routescript.sip API only (ctx.msg) and the source through
  ctx.source (routescript.transport Source);
- a part of the message that is missing, or a variable that makes no sense for this message (the
  R-URI of a reply, the status of a request, anything when the route has no message) is None (NULL);
- a malformed header raises routescript.sip.ParseError from the getter; it is not caught here, so the
  core answers 400 as OpenSIPS does when a header it needs does not parse;
- a setter given a value it cannot use (`$rd = NULL`, `$ru = "not a uri"`) raises ValueError; the
  script runtime logs it and the assignment has no effect (OpenSIPS: "failed to set ...").

Indexes (`$(hdr(Via)[1])`, `$(avp(x)[-1])`, `$(ct[*])`): None is the default (first) value, an int
counts from 0 (negative from the end, -1 is the last), "*" joins every value with ", " as OpenSIPS's
PV_FIELD_DELIM does.

$var lives in the context (see context.py: one message, one set of variables).
$avp is a stack: assignment pushes a new value on top ($avp(x) reads the newest); as OpenSIPS 3.x
documents, `$avp(x) = NULL` removes the newest value only, `$(avp(x)[n]) = NULL` removes value n,
`$(avp(x)[*]) = NULL` (and `$avp(x) := NULL`, which the compiler passes with index "*") removes all,
`$(avp(x)[n]) = v` overwrites value n and `$(avp(x)[*]) = v` replaces all values by v.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable
from typing import Any

from routescript.sip import ParseError, header_key, parse_uri

from .context import MsgContext
from .registry import PVarSpec
from .transforms import nameaddr_name, nameaddr_uri

Clock = Callable[[], float]

# Join of "[*]" indexes (OpenSIPS pvar.c PV_FIELD_DELIM).
FIELD_DELIM = ", "
# Bound on the values one AVP may hold (a runaway loop pushing values must not eat the memory).
MAX_AVP_VALUES = 10000
# Bound on a $var/$avp string value.
MAX_VALUE_LEN = 65536

_VAR_NAME = re.compile(r"[^\s()\[\]{}$]+")


# ---------------------------------------------------------------------------------------------------
# helpers

def _request(ctx: MsgContext) -> Any:
    """ctx.msg when it is a request, else None."""
    msg = ctx.msg
    if msg is None or not msg.is_request:
        return None
    return msg


def _index(index: Any) -> int | str | None:
    if index is None or index == "*" or isinstance(index, int):
        same: int | str | None = index
        return same
    if isinstance(index, str):
        try:
            return int(index)
        except ValueError:
            pass
    raise ValueError(f"bad index {index!r}")


def _text(value: Any) -> str:
    return str(value) if not isinstance(value, str) else value


def _pick(values: list[Any], index: Any) -> Any:
    """The value at `index` from a list, by the rules in the module docstring."""
    idx = _index(index)
    if idx is None:
        return values[0] if values else None
    if idx == "*":
        return FIELD_DELIM.join(_text(v) for v in values if v is not None) if values else None
    assert isinstance(idx, int)
    if -len(values) <= idx < len(values):
        return values[idx]
    return None


def _script_value(value: Any) -> Any:
    """What a variable may hold: str or int (bool becomes int)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if len(value) > MAX_VALUE_LEN:
            raise ValueError("value too long")
        return value
    raise ValueError(f"cannot store a {type(value).__name__} in a script variable")


def _none_if_empty(value: Any) -> Any:
    return None if value in (None, "") else value


def _default_port(uri: Any) -> int:
    # OpenSIPS answers 5060 for a URI without a port; a sips URI defaults to 5061 (RFC 3261 19.1.2).
    return uri.port if uri.port is not None else (5061 if uri.scheme == "sips" else 5060)


def _transport(uri: Any) -> str:
    # OpenSIPS's $rP/$dP give "UDP" when the URI has no transport parameter.
    value = uri.param("transport")
    return value if value else "UDP"


def _check_header_name(key: str) -> None:
    # field-name = token (RFC 3261 25.1); compact forms ("m", "v") are names too.
    if not isinstance(key, str) or header_key(key) is None:
        raise ValueError(f"bad header name {key!r}")


def _check_name(pattern: re.Pattern[str], what: str) -> Callable[[str], None]:
    def check(key: str) -> None:
        if not isinstance(key, str) or not pattern.fullmatch(key):
            raise ValueError(f"bad {what} name {key!r}")

    return check


# ---------------------------------------------------------------------------------------------------
# $var(name), $avp(name)

def get_var(ctx: MsgContext, key: str | None, index: Any) -> Any:
    return ctx.vars.get(key) if key is not None else None


def set_var(ctx: MsgContext, key: str | None, index: Any, value: Any) -> None:
    """`$var(x) = NULL` deletes the variable (reading it again gives NULL)."""
    if value is None:
        ctx.vars.pop(key, None)  # type: ignore[arg-type]
    else:
        ctx.vars[key] = _script_value(value)  # type: ignore[index]


def get_avp(ctx: MsgContext, key: str | None, index: Any) -> Any:
    return _pick(ctx.avps.get(key, []), index)  # type: ignore[arg-type]


def set_avp(ctx: MsgContext, key: str | None, index: Any, value: Any) -> None:
    values = ctx.avps.get(key)  # type: ignore[arg-type]
    idx = index if index == "append" else _index(index)
    if value is None:
        if not values:
            return
        if idx == "*":
            values.clear()
        elif idx is None:
            del values[0]
        elif isinstance(idx, int) and idx >= 0:
            if idx < len(values):
                del values[idx]
        else:
            raise ValueError("cannot delete an AVP value at a negative index")  # as OpenSIPS
        if not values:
            del ctx.avps[key]  # type: ignore[arg-type]
        return
    value = _script_value(value)
    if values is None:
        values = ctx.avps[key] = []  # type: ignore[index]
    if idx == "*":
        values.clear()
        values.append(value)
        return
    if isinstance(idx, int):
        if not -len(values) <= idx < len(values):
            if not values:
                del ctx.avps[key]  # type: ignore[arg-type]
            raise ValueError(f"AVP index {idx} out of range")
        values[idx] = value
        return
    if len(values) >= MAX_AVP_VALUES:
        raise ValueError(f"too many values in $avp({key}) (limit {MAX_AVP_VALUES})")
    if idx == "append":
        values.append(value)  # $(avp(x)[append]) adds at the end (the oldest position)
    else:
        values.insert(0, value)


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
    msg = _request(ctx)
    return None if msg is None else msg.ruri


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

def _name_addr(ctx: MsgContext, which: str) -> Any:
    msg = ctx.msg
    if msg is None:
        return None
    return msg.from_ if which == "from" else msg.to


def _na_attr(which: str, attr: str) -> Callable[[MsgContext, Any, Any], Any]:
    header = "From" if which == "from" else "To"

    def getter(ctx: MsgContext, key: Any, index: Any) -> Any:
        na = _name_addr(ctx, which)
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
                return nameaddr_name(ctx.msg.header(header)) or na.display
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
    if msg is None:
        return None
    if index is None:
        first: str | None = msg.header(key)
        return first
    picked: str | None = _pick(msg.header_all(key), index)
    return picked


def get_hdrcnt(ctx: MsgContext, key: str | None, index: Any) -> int | None:
    msg = ctx.msg
    if msg is None:
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
    method: str = msg.method if msg.is_request else msg.cseq.method
    return method


def get_status(ctx: MsgContext, key: Any, index: Any) -> int | None:
    msg = ctx.msg
    return None if msg is None or msg.is_request else msg.status


def get_reason(ctx: MsgContext, key: Any, index: Any) -> str | None:
    msg = ctx.msg
    return None if msg is None or msg.is_request else msg.reason


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


def get_proto(ctx: MsgContext, key: Any, index: Any) -> str | None:
    """$pr/$proto: "udp", "tcp"... (OpenSIPS prints the protocol module's lower-case name)."""
    return None if ctx.source is None else str(ctx.source.proto).lower()


# ---------------------------------------------------------------------------------------------------
# script state: $retcode $rc $? $param(name) $err.* $T_reply_code

def get_retcode(ctx: MsgContext, key: Any, index: Any) -> int:
    return ctx.retcode


def get_param(ctx: MsgContext, key: str | None, index: Any) -> Any:
    """$param(name) in event_route (and $param(n) for route parameters, when the runtime stores them
    under their position)."""
    if key in ctx.params:
        return ctx.params[key]
    if key is not None and key.isdigit():
        return ctx.params.get(int(key))  # type: ignore[call-overload]
    return None


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
    return None if msg is None or msg.is_request else msg.status


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
# the table

def core_pvars(clock: Clock = time.time) -> list[PVarSpec]:
    """Every core pseudo-variable, ready for `Registry.add_pvar`.

    clock: the wall clock $Ts/$Tsm/$Tf/$time read (time.time by default; tests pass a fixed one).
    """
    check_var = _check_name(_VAR_NAME, "variable")
    check_param = _check_name(_VAR_NAME, "parameter")
    specs = [
        PVarSpec("var", get_var, set_var, key="required", check_key=check_var),
        PVarSpec("avp", get_avp, set_avp, key="required", check_key=check_var),
        # Request-URI
        PVarSpec("ru", get_ruri, set_ruri),
        PVarSpec("ruri", get_ruri, set_ruri),
        PVarSpec("rU", _ruri_attr("user"), set_ruri_user),
        PVarSpec("rd", _ruri_attr("host"), set_ruri_host),
        PVarSpec("rp", _ruri_attr("port"), set_ruri_port),
        PVarSpec("rP", _ruri_attr("transport")),
        PVarSpec("rz", _ruri_attr("scheme")),
        PVarSpec("ou", get_ouri),
        PVarSpec("oU", _ouri_attr("user")),
        PVarSpec("od", _ouri_attr("host")),
        PVarSpec("op", _ouri_attr("port")),
        PVarSpec("oP", _ouri_attr("transport")),
        PVarSpec("du", get_duri, set_duri),
        PVarSpec("dd", _duri_attr("host")),
        PVarSpec("dp", _duri_attr("port")),
        PVarSpec("dP", _duri_attr("transport")),
        # From / To
        PVarSpec("fu", _na_attr("from", "uri")),
        PVarSpec("fU", _na_attr("from", "user")),
        PVarSpec("fd", _na_attr("from", "host")),
        PVarSpec("fn", _na_attr("from", "display")),
        PVarSpec("ft", _na_attr("from", "tag")),
        PVarSpec("tu", _na_attr("to", "uri")),
        PVarSpec("tU", _na_attr("to", "user")),
        PVarSpec("td", _na_attr("to", "host")),
        PVarSpec("tn", _na_attr("to", "display")),
        PVarSpec("tt", _na_attr("to", "tag")),
        # headers
        PVarSpec("hdr", get_hdr, key="required", check_key=_check_header_name),
        PVarSpec("hdrcnt", get_hdrcnt, key="required", check_key=_check_header_name),
        PVarSpec("ct", get_ct),
        PVarSpec("ct.fields", get_ct_fields, key="required", check_key=_check_ct_field),
        PVarSpec("cT", _header_getter("Content-Type")),
        PVarSpec("cl", get_content_length),
        PVarSpec("ua", _header_getter("User-Agent")),
        PVarSpec("ai", _header_uri_getter("P-Asserted-Identity")),
        PVarSpec("rt", _header_uri_getter("Refer-To")),
        # message
        PVarSpec("ci", get_call_id),
        PVarSpec("cs", get_cseq),
        PVarSpec("rm", get_method),
        PVarSpec("rs", get_status),
        PVarSpec("rr", get_reason),
        PVarSpec("rb", get_body),
        PVarSpec("ml", get_msg_len),
        PVarSpec("mb", get_msg_buf),
        # network
        PVarSpec("si", get_src_ip),
        PVarSpec("sp", get_src_port),
        PVarSpec("Ri", get_rcv_ip),
        PVarSpec("Rp", get_rcv_port),
        PVarSpec("pr", get_proto),
        PVarSpec("proto", get_proto),
        # script state
        PVarSpec("retcode", get_retcode),
        PVarSpec("rc", get_retcode),
        PVarSpec("?", get_retcode),
        PVarSpec("param", get_param, key="required", check_key=check_param),
        PVarSpec("T_reply_code", get_reply_code),
        PVarSpec("pp", lambda ctx, key, index: os.getpid()),
    ]
    for attr in ("class", "level", "info", "rcode", "rreason"):
        specs.append(PVarSpec(f"err.{attr}", _err_attr(attr)))
    specs.extend(_time_pvars(clock))
    return specs
