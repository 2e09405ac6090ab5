"""The core transformations of the script language: `$(var(x){s.substr,1,2}{uri.user})`.

This module assembles `core_transforms()` and re-exports the public names; the classes live in
tr_string (s.), tr_uri (uri.), tr_params (param., nameaddr.), tr_misc (csv., re.subst, ip.) and
tr_common (shared helpers).

OpenSIPS 3.x semantics (Script-Tran-3-4 and transformations.c), classes `s.`, `uri.`, `param.`,
`nameaddr.`, `csv.`, `re.` and `ip.`. Every transformation is `fn(value, *params)`:

- the value is a str, an int or None (NULL); a NULL value passes through every transformation
  unchanged, as OpenSIPS does;
- a value the transformation cannot handle (not a URI for `uri.*`, an empty string, an offset out of
  range) raises ValueError - the compiler then makes the whole expression NULL, like OpenSIPS's
  "transformation failed";
- a part that is simply absent (a URI without a user, a parameter not there) gives None.

Params are the literals written in the script. Integer params may arrive as numeric strings; each fixup
converts them at load time and refuses bad ones, and the functions convert again so that values
computed at run time work too.

Choices where OpenSIPS works on raw bytes: offsets and lengths (`s.len`, `s.substr`, `s.index`) count
characters, not UTF-8 bytes (identical for ASCII, which is what SIP scripts handle); byte-oriented
transformations (`s.md5`, `s.encode.hexa`, `s.b64encode`, `ip.pton`) use the UTF-8 bytes of the text,
and the binary strings they produce are decoded with "surrogateescape" so any byte round-trips.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .registry import TransformSpec
from .tr_common import MAX_RESULT_LEN, _char_param, _fixup_ints, _fixup_strs, _null_passes, _sep_fixup
from .tr_misc import (
    csv_count, csv_value, SubstExpr, re_subst, ip_isip, ip_isip4, ip_isip6, ip_pton, ip_ntop, ip_family,
    ip_matches, ip_isprivate, _network_fixup, _re_subst_fixup,
)
from .tr_params import (
    param_value, param_valueat, param_name, param_count, param_exist, nameaddr_name, nameaddr_uri,
    nameaddr_len, nameaddr_param, nameaddr_params,
)
from .tr_string import (
    s_len, s_int, s_md5, s_reverse, s_substr, s_select, s_encode_hexa, s_decode_hexa, s_hex2dec, s_dec2hex,
    s_escape_common, s_unescape_common, s_escape_user, s_unescape_user, s_escape_param, s_unescape_param,
    s_tolower, s_toupper, s_index, s_rindex, s_fill_left, s_fill_right, s_width, s_trim, s_trimr, s_triml,
    s_b64encode, s_b64decode, s_strip, s_striptail, s_stripto, _digest, _fill_fixup, _hmac_digest,
    _index_fixup, _width_fixup,
)
from .tr_uri import (
    uri_user, uri_host, uri_passwd, uri_port, uri_params, uri_param, uri_headers, uri_scheme,
    _uri_named_param,
)

__all__ = [
    "MAX_RESULT_LEN", "core_transforms", "s_len", "s_int", "s_md5", "s_reverse", "s_substr", "s_select",
    "s_encode_hexa", "s_decode_hexa", "s_hex2dec", "s_dec2hex", "s_escape_common", "s_unescape_common",
    "s_escape_user", "s_unescape_user", "s_escape_param", "s_unescape_param", "s_tolower", "s_toupper",
    "s_index", "s_rindex", "s_fill_left", "s_fill_right", "s_width", "s_trim", "s_trimr", "s_triml",
    "s_b64encode", "s_b64decode", "s_strip", "s_striptail", "s_stripto", "uri_user", "uri_host",
    "uri_passwd", "uri_port", "uri_params", "uri_param", "uri_headers", "uri_scheme", "param_value",
    "param_valueat", "param_name", "param_count", "param_exist", "nameaddr_name", "nameaddr_uri",
    "nameaddr_len", "nameaddr_param", "nameaddr_params", "csv_count", "csv_value", "SubstExpr", "re_subst",
    "ip_isip", "ip_isip4", "ip_isip6", "ip_pton", "ip_ntop", "ip_family", "ip_matches", "ip_isprivate",
]


def _spec(name: str, fn: Callable[..., Any], min_params: int = 0, max_params: int | None = None,
          fixup: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None) -> TransformSpec:
    return TransformSpec(name=name, fn=_null_passes(fn), min_params=min_params,
                         max_params=min_params if max_params is None else max_params, fixup=fixup)


def core_transforms() -> list[TransformSpec]:
    """Every core transformation, ready for `Registry.add_transform`."""
    specs = [
        _spec("s.len", s_len),
        _spec("s.int", s_int),
        _spec("s.md5", s_md5),
        _spec("s.reverse", s_reverse),
        _spec("s.substr", s_substr, 2, fixup=_fixup_ints("s.substr offset", "s.substr length")),
        _spec("s.select", s_select, 2, 3, fixup=_sep_fixup("s.select index", True)),
        _spec("s.encode.hexa", s_encode_hexa),
        _spec("s.decode.hexa", s_decode_hexa),
        _spec("s.hex2dec", s_hex2dec),
        _spec("s.dec2hex", s_dec2hex),
        _spec("s.escape.common", s_escape_common),
        _spec("s.unescape.common", s_unescape_common),
        _spec("s.escape.user", s_escape_user),
        _spec("s.unescape.user", s_unescape_user),
        _spec("s.escape.param", s_escape_param),
        _spec("s.unescape.param", s_unescape_param),
        _spec("s.tolower", s_tolower),
        _spec("s.toupper", s_toupper),
        _spec("s.index", s_index, 1, 2, fixup=_index_fixup),
        _spec("s.rindex", s_rindex, 1, 2, fixup=_index_fixup),
        _spec("s.fill.left", s_fill_left, 2, fixup=_fill_fixup),
        _spec("s.fill.right", s_fill_right, 2, fixup=_fill_fixup),
        _spec("s.width", s_width, 1, fixup=_width_fixup),
        _spec("s.trim", s_trim),
        _spec("s.trimr", s_trimr),
        _spec("s.triml", s_triml),
        _spec("s.b64encode", s_b64encode),
        _spec("s.b64decode", s_b64decode),
        _spec("s.strip", s_strip, 1, fixup=_fixup_ints("s.strip")),
        _spec("s.striptail", s_striptail, 1, fixup=_fixup_ints("s.striptail")),
        _spec("s.stripto", s_stripto, 1, fixup=lambda p: (_char_param(p[0], "s.stripto"),)),
        _spec("uri.user", uri_user),
        _spec("uri.host", uri_host),
        _spec("uri.domain", uri_host),
        _spec("uri.passwd", uri_passwd),
        _spec("uri.port", uri_port),
        _spec("uri.params", uri_params),
        _spec("uri.param", uri_param, 1, fixup=_fixup_strs("uri.param")),
        _spec("uri.headers", uri_headers),
        _spec("uri.schema", uri_scheme),
        _spec("uri.scheme", uri_scheme),
        _spec("param.value", param_value, 1, 3, fixup=_sep_fixup("param.value name", False)),
        _spec("param.valueat", param_valueat, 1, 3, fixup=_sep_fixup("param.valueat index", True)),
        _spec("param.name", param_name, 1, 3, fixup=_sep_fixup("param.name index", True)),
        _spec("param.count", param_count, 0, 2, fixup=_sep_fixup("", False, takes_first=False)),
        _spec("param.exist", param_exist, 1, 3, fixup=_sep_fixup("param.exist name", False)),
        _spec("nameaddr.name", nameaddr_name),
        _spec("nameaddr.uri", nameaddr_uri),
        _spec("nameaddr.len", nameaddr_len),
        _spec("nameaddr.param", nameaddr_param, 1, fixup=_fixup_strs("nameaddr.param")),
        _spec("nameaddr.params", nameaddr_params),
        _spec("csv.count", csv_count),
        _spec("csv.value", csv_value, 1, fixup=_fixup_ints("csv.value")),
        _spec("re.subst", re_subst, 1, 64, fixup=_re_subst_fixup),
        _spec("ip.isip", ip_isip),
        _spec("ip.isip4", ip_isip4),
        _spec("ip.isip6", ip_isip6),
        _spec("ip.pton", ip_pton),
        _spec("ip.ntop", ip_ntop),
        _spec("ip.family", ip_family),
        _spec("ip.matches", ip_matches, 1, fixup=_network_fixup),
        _spec("ip.isprivate", ip_isprivate),
    ]
    for pname in ("transport", "ttl", "maddr", "method", "lr", "r2"):
        specs.append(_spec(f"uri.{pname}", _uri_named_param(pname)))
    specs.append(_spec("uri.uparam", _uri_named_param("user")))
    for algo in ("sha1", "sha224", "sha256", "sha384", "sha512"):
        specs.append(_spec(f"s.{algo}", _digest(algo)))
        specs.append(_spec(f"s.{algo}_hmac", _hmac_digest(algo), 1, fixup=_fixup_strs("key")))
    return specs
