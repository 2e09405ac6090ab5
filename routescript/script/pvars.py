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

The entries live by kind in pv_message.py (R-URI, From/To, headers, message parts), pv_script.py
($var, $avp, $retcode, $param), pv_env.py (transport, $err.*, $T_reply_code, time) and pv_common.py
(shared limits and helpers); this module assembles the table and re-exports their public names.
"""

from __future__ import annotations

import os
import re
import time

from .pv_common import FIELD_DELIM, MAX_AVP_VALUES, MAX_VALUE_LEN, Clock, _check_header_name, _check_name
from .pv_env import (_err_attr, _time_pvars, check_env_name, check_socket_in_field, get_af, get_env,
                     get_proto, get_rcv_ip, get_rcv_port, get_reply_code, get_socket_in, get_src_ip,
                     get_src_port)
from .pv_message import (CT_FIELDS, _check_ct_field, _duri_attr, _header_getter, _header_uri_getter, _na_attr,
                         _ouri_attr, _ruri_attr, get_body, get_call_id, get_content_length, get_cseq, get_ct,
                         get_ct_fields, get_duri, get_hdr, get_hdrcnt, get_method, get_msg_buf, get_msg_len,
                         get_ouri, get_reason, get_ruri, get_status, set_duri, set_ruri, set_ruri_host,
                         set_ruri_port, set_ruri_user)
from .pv_script import get_avp, get_param, get_retcode, get_var, set_avp, set_var
from .registry import PVarSpec

__all__ = [
    "CT_FIELDS", "FIELD_DELIM", "MAX_AVP_VALUES", "MAX_VALUE_LEN", "Clock", "core_pvars",
    # message
    "get_body", "get_call_id", "get_content_length", "get_cseq", "get_ct", "get_ct_fields", "get_duri",
    "get_hdr", "get_hdrcnt", "get_method", "get_msg_buf", "get_msg_len", "get_ouri", "get_reason", "get_ruri",
    "get_status", "set_duri", "set_ruri", "set_ruri_host", "set_ruri_port", "set_ruri_user",
    # script
    "get_avp", "get_param", "get_retcode", "get_var", "set_avp", "set_var",
    # transport, error, time
    "get_af", "get_proto", "get_rcv_ip", "get_rcv_port", "get_reply_code", "get_src_ip", "get_src_port",
]

_VAR_NAME = re.compile(r"[^\s()\[\]{}$]+")


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
        PVarSpec("avp", get_avp, set_avp, key="required", check_key=check_var,
                 index_words=frozenset({"append"})),
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
        PVarSpec("socket_in", get_socket_in, key="optional", check_key=check_socket_in_field),
        PVarSpec("pr", get_proto),
        PVarSpec("proto", get_proto),
        PVarSpec("af", get_af),
        # script state
        PVarSpec("retcode", get_retcode),
        PVarSpec("rc", get_retcode),
        PVarSpec("?", get_retcode),
        PVarSpec("param", get_param, key="required", check_key=check_param),
        PVarSpec("T_reply_code", get_reply_code),
        PVarSpec("pp", lambda ctx, key, index: os.getpid()),
        PVarSpec("env", get_env, key="required", check_key=check_env_name),
    ]
    for attr in ("class", "level", "info", "rcode", "rreason"):
        specs.append(PVarSpec(f"err.{attr}", _err_attr(attr)))
    specs.extend(_time_pvars(clock))
    return specs
