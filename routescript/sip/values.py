"""Parsed header values (RFC 3261 section 20/25, RFC 6665): frozen, slotted value objects and the
parsers that make them. Each parser takes one header value (one element of a comma list) and raises
ParseError("Bad <Header> header") on bad input.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field, replace

from . import _abnf
from ._fast import slot_setters
from ._memo import MEMO_SIZE
from ._params import (
    ParamMap,
    Params,
    format_params,
    mapped_value,
    param_map,
    parse_generic_params,
    quote,
    unquote,
    with_param,
)
from .errors import ParseError
from .uri import SipURI, parse_uri

_MAX_EXPIRES = 2**32 - 1
# The lookup form of an empty parameter list, shared (nothing writes to a ParamMap once made).
# The parsers' constructors read a ParamMap with `in` and `[]` rather than .get(): a method call on
# every value parsed, which the per-request call count (docs/benchmarks.md) charges to every message.
_NO_PARAMS: ParamMap = {}


def parse_delta_seconds(value: str, what: str, *, cap: int = _MAX_EXPIRES) -> int:
    """delta-seconds = 1*DIGIT. RFC 3261 20.19: a value above 2**32-1 is taken as 2**32-1 (we cap
    before converting, so a 5000-digit value costs nothing)."""
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        raise ParseError(f"Bad {what}")
    if len(value) > 10:
        return cap
    number = int(value)
    return number if number < cap else cap


# --- name-addr / addr-spec -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route-style value: display name (unquoted text, None when absent), the URI and
    the header parameters after it (`;tag=...`)."""

    display: str | None
    uri: SipURI
    params: Params = ()
    # Read from `params` once, when the value is made (the dialog and transaction code read the tag
    # several times per request): derived, so neither compared nor shown.
    tag: str | None = field(init=False, repr=False, compare=False)
    _param_map: ParamMap = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pmap = param_map(self.params)
        object.__setattr__(self, "_param_map", pmap)
        object.__setattr__(self, "tag", pmap.get("tag"))

    def param(self, name: str) -> str | None:
        """Header parameter `name` (case-insensitive), unquoted; "" for a flag; None when absent."""
        return mapped_value(self._param_map, name)

    def has_param(self, name: str) -> bool:
        return name in self._param_map or name.lower() in self._param_map

    def with_param(self, name: str, value: str | None) -> NameAddr:
        return replace(self, params=with_param(self.params, name, value))

    def with_tag(self, tag: str) -> NameAddr:
        return self.with_param("tag", tag)

    def __str__(self) -> str:
        # Always the name-addr form: a URI with ';', ',' or '?' must be in <> (RFC 3261 20.10).
        display = f"{quote(self.display)} " if self.display is not None else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


_set_na_display, _set_na_uri, _set_na_params, _set_na_tag, _set_na_map = slot_setters(NameAddr)


def _new_name_addr(display: str | None, uri: SipURI, params: Params) -> NameAddr:
    """NameAddr(...) for the parser's checked parts, without __init__'s object.__setattr__ (_fast.py)."""
    name_addr = object.__new__(NameAddr)
    _set_na_display(name_addr, display)
    _set_na_uri(name_addr, uri)
    _set_na_params(name_addr, params)
    pmap = param_map(params) if params else _NO_PARAMS
    _set_na_map(name_addr, pmap)
    _set_na_tag(name_addr, pmap["tag"] if "tag" in pmap else None)  # noqa: SIM401 - see _NO_PARAMS
    return name_addr


# The tag-param of a From/To value (RFC 3261 25.1: tag-param = "tag" EQUAL token), after the name-addr's
# closing ">" when there is one (a tag inside <...> is the URI's, not the header's).
_HEADER_TAG = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^;,\s>]+)", re.IGNORECASE)


def name_addr_tag(value: str) -> str:
    """The `tag` of a From/To header value as `parse_name_addr(value).tag` gives it for a well-formed
    value ("" when it has none), read without parsing the display name and the URI: a stateless reply's
    to-tag needs only this (the full parse was a twentieth of an OPTIONS). A value the full parser
    would refuse still gives a stable answer here - all a to-tag needs."""
    gt = value.rfind(">")
    m = _HEADER_TAG.search(value, gt if gt >= 0 else 0)
    return m.group(1) if m is not None else ""


# Parsed name-addrs by their text (_memo.py): From/To values (their tag-param checked) apart from the
# others, which accept a tag without a value.
_TAGGED_MEMO: dict[str, NameAddr] = {}
_NAME_ADDR_MEMO: dict[str, NameAddr] = {}


def parse_name_addr(value: str, what: str = "From") -> NameAddr:
    """Parse `( name-addr / addr-spec ) *( SEMI generic-param )` (RFC 3261 20.10, 25.1):

        name-addr     =  [ display-name ] LAQUOT addr-spec RAQUOT
        display-name  =  *(token LWS)/ quoted-string

    In the addr-spec form, everything after the first ';' is a header parameter (RFC 3261 20.10).
    Choice: an unquoted display name is accepted whatever its characters (UAs send non-token names).
    """
    memo = _TAGGED_MEMO if what in _TAGGED else _NAME_ADDR_MEMO
    if value in memo:
        return memo[value]
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    s = value.strip()
    display: str | None = None
    # s[:1] tests rather than startswith(): every From, To and Contact of every request goes through here
    if s[:1] == '"':
        m = _abnf.QUOTED_STRING.match(s)
        if m is None:
            raise ParseError(f"Bad {what} header")
        display = unquote(m.group())
        s = s[m.end():].lstrip()
        if s[:1] != "<":
            raise ParseError(f"Bad {what} header")
    else:
        lt = s.find("<")
        if lt > 0:
            display = s[:lt].strip() or None
            if display is not None and '"' in display:
                raise ParseError(f"Bad {what} header")
            s = s[lt:]
    if s[:1] == "<":
        gt = s.find(">")
        if gt < 0:
            raise ParseError(f"Bad {what} header")
        uri_text = s[1:gt].strip()
        params_text = s[gt + 1:]
    else:
        semi = s.find(";")
        if semi >= 0:
            uri_text, params_text = s[:semi].rstrip(), s[semi:]
        else:
            uri_text, params_text = s, ""
        if not uri_text or " " in uri_text or "," in uri_text or "?" in uri_text:
            raise ParseError(f"Bad {what} header")
    try:
        uri = parse_uri(uri_text)
    except ParseError:
        raise ParseError(f"Bad {what} header") from None
    params = parse_generic_params(params_text, what) if params_text else ()
    if what in _TAGGED:
        quoted = '"' in params_text
        for name, written in params:
            if name in _TAG_SPELLINGS and (written is None or (quoted and not _token_param_ok(written))):
                raise ParseError(f"Bad {what} header")
    name_addr = memo[value] = _new_name_addr(display, uri, params)
    return name_addr


# The headers whose `tag` parameter is a tag-param (RFC 3261 25.1: from-param, to-param).
_TAGGED = ("From", "To")


def _spellings(name: str) -> frozenset[str]:
    """Every upper/lower-case spelling of a parameter name (they are case-insensitive, RFC 3261 7.3.1):
    a set lookup finds one without lower-casing each parameter name of every message."""
    out = {""}
    for ch in name:
        out = {prefix + c for prefix in out for c in {ch.lower(), ch.upper()}}
    return frozenset(out)


_TAG_SPELLINGS = _spellings("tag")
_RPORT_SPELLINGS = _spellings("rport")
_ID_SPELLINGS = _spellings("id")


def _token_param_ok(written: str) -> bool:
    """A tag-param or event id (`"tag" EQUAL token`, `"id" EQUAL token`) has a value made of the characters
    of an unquoted gen-value: it is stored and written back as it is. `.tag` and `.id` read it unquoted, so
    a quoted "abc" (tolerated as before) counts as abc; a quoted value holding anything else (";", ",", a
    space) or nothing is refused. The callers check a value only when the parameters hold a quote: without
    one, parse_generic_params has already held every value to the unquoted characters (and a `tag` without
    a value is None, refused by the callers)."""
    value = unquote(written) if written[:1] == '"' else written
    return _abnf.PARAM_TOKEN.fullmatch(value) is not None


# --- Via ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm: `protocol` ("SIP/2.0/UDP", whitespace removed), sent-by `host` (IPv6 keeps its
    brackets) and `port`, and the via-params in order (branch, received, rport...)."""

    protocol: str
    host: str
    port: int | None = None
    params: Params = ()
    # Read from `params` once, when the value is made (the transaction key, the to-tag and the reply's
    # destination each read the branch): derived, so neither compared nor shown.
    branch: str | None = field(init=False, repr=False, compare=False)
    received: str | None = field(init=False, repr=False, compare=False)
    # RFC 3581: None when absent, True when present without a value, else the port.
    rport: int | bool | None = field(init=False, repr=False, compare=False)
    _param_map: ParamMap = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pmap = param_map(self.params)
        branch, received, rport = _via_slots(pmap)
        object.__setattr__(self, "_param_map", pmap)
        object.__setattr__(self, "branch", branch)
        object.__setattr__(self, "received", received)
        object.__setattr__(self, "rport", rport)

    @property
    def transport(self) -> str:
        """The transport of sent-protocol, upper-cased: "UDP", "TCP", "TLS"..."""
        return self.protocol.rpartition("/")[2].upper()

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def param(self, name: str) -> str | None:
        return mapped_value(self._param_map, name)

    def has_param(self, name: str) -> bool:
        return name in self._param_map or name.lower() in self._param_map

    def with_param(self, name: str, value: str | None) -> Via:
        """A copy with via-param `name` set (e.g. received / rport, RFC 3261 18.2.1, RFC 3581)."""
        return replace(self, params=with_param(self.params, name, value))

    def __str__(self) -> str:
        return f"{self.protocol} {self.sent_by}{format_params(self.params)}"


def _via_slots(pmap: ParamMap) -> tuple[str | None, str | None, int | bool | None]:
    """(branch, received, rport) from a Via's parameters; ValueError for an rport that is no port
    (the parser refuses it first, as a bad Via header)."""
    rport: int | bool | None = None
    if "rport" in pmap:
        text = pmap["rport"]
        if text == "":
            rport = True
        elif text.isascii() and text.isdigit() and len(text) <= 5:
            rport = int(text)
        else:
            raise ValueError(f"Via rport is not a port: {text!r}")
    return (pmap["branch"] if "branch" in pmap else None,  # noqa: SIM401 - see _NO_PARAMS
            pmap["received"] if "received" in pmap else None, rport)  # noqa: SIM401


(_set_via_protocol, _set_via_host, _set_via_port, _set_via_params,
 _set_via_branch, _set_via_received, _set_via_rport, _set_via_map) = slot_setters(Via)


def _new_via(protocol: str, host: str, port: int | None, params: Params) -> Via:
    """Via(...) for the parser's checked parts, without __init__'s object.__setattr__ (_fast.py)."""
    via = object.__new__(Via)
    _set_via_protocol(via, protocol)
    _set_via_host(via, host)
    _set_via_port(via, port)
    _set_via_params(via, params)
    pmap = param_map(params) if params else _NO_PARAMS
    branch, received, rport = _via_slots(pmap)
    _set_via_map(via, pmap)
    _set_via_branch(via, branch)
    _set_via_received(via, received)
    _set_via_rport(via, rport)
    return via


# Parsed via-parms by their text (_memo.py).
_VIA_MEMO: dict[str, Via] = {}


def parse_via(value: str) -> Via:
    """Parse one via-parm (RFC 3261 20.42):

        via-parm  =  sent-protocol LWS sent-by *( SEMI via-params )
        via-params  =  via-ttl / via-maddr / via-received / via-branch / via-extension
        response-port  =  "rport" [EQUAL 1*DIGIT]      (RFC 3581)
    """
    memo = _VIA_MEMO
    if value in memo:   # the top Via of a 180 and of the 200 after it is the same (ours)
        return memo[value]
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    m = _abnf.VIA_PARM.match(value)
    if m is None:
        raise ParseError("Bad Via header")
    protocol, host, port_text = m.groups()
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise ParseError("Bad Via header")
    params = parse_generic_params(value[m.end():], "Via")
    for name, pvalue in params:
        if pvalue is not None and name in _RPORT_SPELLINGS and not (
            pvalue.isascii() and pvalue.isdigit() and len(pvalue) <= 5
        ):
            raise ParseError("Bad Via header")
    if " " in protocol or "\t" in protocol:
        protocol = protocol.replace(" ", "").replace("\t", "")
    via = memo[value] = _new_via(protocol, host, port, params)
    return via


# --- CSeq ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_set_cseq_number, _set_cseq_method = slot_setters(CSeq)


def _new_cseq(number: int, method: str) -> CSeq:
    """CSeq(...) for the parser's checked parts, without __init__'s object.__setattr__ (_fast.py)."""
    cseq = object.__new__(CSeq)
    _set_cseq_number(cseq, number)
    _set_cseq_method(cseq, method)
    return cseq


# Parsed CSeqs by their text (_memo.py): a transaction's request and responses, and the first INVITE
# of every call of a user agent, carry the same one.
_CSEQ_MEMO: dict[str, CSeq] = {}


def parse_cseq(value: str) -> CSeq:
    """CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method   (RFC 3261 20.16: the number is below 2**31)."""
    memo = _CSEQ_MEMO
    if value in memo:   # every message parses its CSeq
        return memo[value]
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    m = _abnf.CSEQ.fullmatch(value.strip())
    if m is None:
        raise ParseError("Bad CSeq header")
    number_text, method = m.groups()
    number = int(number_text)
    if number >= 2**31:
        raise ParseError("Bad CSeq header")
    cseq = memo[value] = _new_cseq(number, method)
    return cseq


# --- Event --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """An Event header (RFC 6665 8.2.1): `package` ("presence"), `templates` (("winfo",)) and params.

    `dialog;sla` is package "dialog" with the flag param "sla" (RFC 4235 / BLA), so `.name` is "dialog";
    presence modules that know the sla flavour check `has_param("sla")`.
    """

    package: str
    templates: tuple[str, ...] = ()
    params: Params = ()
    # Read from `params` once, when the value is made: derived, so neither compared nor shown.
    id: str | None = field(init=False, repr=False, compare=False)
    _param_map: ParamMap = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pmap = param_map(self.params)
        object.__setattr__(self, "_param_map", pmap)
        object.__setattr__(self, "id", pmap.get("id"))

    @property
    def name(self) -> str:
        """event-type: the package with its templates ("presence.winfo")."""
        if not self.templates:
            return self.package
        return ".".join((self.package, *self.templates))

    def param(self, name: str) -> str | None:
        return mapped_value(self._param_map, name)

    def has_param(self, name: str) -> bool:
        return name in self._param_map or name.lower() in self._param_map

    def __str__(self) -> str:
        return f"{self.name}{format_params(self.params)}"


(_set_event_package, _set_event_templates, _set_event_params,
 _set_event_id, _set_event_map) = slot_setters(Event)


def _new_event(package: str, templates: tuple[str, ...], params: Params) -> Event:
    """Event(...) for the parser's checked parts, without __init__'s object.__setattr__ (_fast.py)."""
    event = object.__new__(Event)
    _set_event_package(event, package)
    _set_event_templates(event, templates)
    _set_event_params(event, params)
    pmap = param_map(params) if params else _NO_PARAMS
    _set_event_map(event, pmap)
    _set_event_id(event, pmap["id"] if "id" in pmap else None)  # noqa: SIM401 - see _NO_PARAMS
    return event


def parse_event(value: str) -> Event:
    """Event  =  ( "Event" / "o" ) HCOLON event-type *( SEMI event-param )      (RFC 6665 8.2.1)

        event-type   =  event-package *( "." event-template )
        event-param  =  generic-param / ( "id" EQUAL token )
    """
    s = value.strip()
    m = _abnf.EVENT_TYPE.match(s)
    if m is None:
        raise ParseError("Bad Event header")
    params_text = s[m.end():]
    params = parse_generic_params(params_text, "Event") if params_text else ()
    quoted = '"' in params_text
    for name, written in params:
        if name in _ID_SPELLINGS and (written is None or (quoted and not _token_param_ok(written))):
            raise ParseError("Bad Event header")
    event_type = m.group()
    if "." not in event_type:   # the usual "presence": no split
        return _new_event(event_type, (), params)
    package, *templates = event_type.split(".")
    return _new_event(package, tuple(templates), params)


# --- Contact ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contact:
    """One Contact value: a NameAddr, or the `*` of a REGISTER removing all bindings (star=True)."""

    name_addr: NameAddr | None = None
    star: bool = False

    @property
    def uri(self) -> SipURI | None:
        return None if self.name_addr is None else self.name_addr.uri

    @property
    def expires(self) -> int | None:
        """The `expires` contact-param (RFC 3261 20.10), None when absent."""
        if self.name_addr is None:
            return None
        value = self.name_addr.param("expires")
        return None if value is None else parse_delta_seconds(value, "Contact header")

    @property
    def params(self) -> Params:
        return () if self.name_addr is None else self.name_addr.params

    def param(self, name: str) -> str | None:
        return None if self.name_addr is None else self.name_addr.param(name)

    def __str__(self) -> str:
        return "*" if self.star else str(self.name_addr)


def parse_contact(value: str) -> Contact:
    """Contact  =  ("Contact" / "m" ) HCOLON ( STAR / (contact-param *(COMMA contact-param)))
    contact-param  =  (name-addr / addr-spec) *(SEMI contact-params)          (RFC 3261 20.10)"""
    if value.strip() == "*":
        return Contact(None, True)
    name_addr = parse_name_addr(value, "Contact")
    contact = Contact(name_addr, False)
    contact.expires  # noqa: B018 - a bad expires param is a bad Contact header, found now
    return contact


# --- Content-Type -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContentType:
    """media-type: `type`/`subtype` as written, and the m-parameters (`;charset=...`)."""

    type: str
    subtype: str
    params: Params = ()
    _param_map: ParamMap = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_param_map", param_map(self.params))

    @property
    def mime(self) -> str:
        """"type/subtype" lower-cased (media types are case-insensitive, RFC 2045)."""
        return f"{self.type}/{self.subtype}".lower()

    def param(self, name: str) -> str | None:
        return mapped_value(self._param_map, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{format_params(self.params)}"


_set_ct_type, _set_ct_subtype, _set_ct_params, _set_ct_map = slot_setters(ContentType)


def _new_content_type(type_: str, subtype: str, params: Params) -> ContentType:
    """ContentType(...) for the parser's checked parts, without __init__'s object.__setattr__ (_fast.py)."""
    content_type = object.__new__(ContentType)
    _set_ct_type(content_type, type_)
    _set_ct_subtype(content_type, subtype)
    _set_ct_params(content_type, params)
    _set_ct_map(content_type, param_map(params) if params else _NO_PARAMS)
    return content_type


def parse_content_type(value: str) -> ContentType:
    """Content-Type  =  ( "Content-Type" / "c" ) HCOLON media-type
    media-type  =  m-type SLASH m-subtype *(SEMI m-parameter)                   (RFC 3261 20.15)"""
    s = value.strip()
    m = _abnf.MEDIA_TYPE.match(s)
    if m is None:
        raise ParseError("Bad Content-Type header")
    type_, subtype = m.groups()
    return _new_content_type(type_, subtype, parse_generic_params(s[m.end():], "Content-Type"))
