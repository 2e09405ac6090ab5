"""SIP, SIPS and tel URIs (RFC 3261 19.1, RFC 3966) as frozen value objects."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from . import _abnf
from ._fast import slot_setters
from ._memo import MEMO_SIZE
from ._params import Params, format_params, with_param
from .errors import ParseError

_MAX_URI_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class SipURI:
    """A parsed URI.

    scheme:   "sip", "sips", "tel" (also "pres"/"im", which share the sip form), lower-cased.
    user:     the user part as written (still %-escaped), None when absent; for tel the number.
    password: None when absent.
    host:     as written; an IPv6 reference keeps its brackets ("[::1]"); "" for tel.
    port:     int or None.
    params:   `;name=value` pairs in order, value None for a flag (";lr").
    headers:  `?name=value&...` pairs in order.
    """

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """Value of URI parameter `name` (case-insensitive); "" for a flag; None when absent."""
        params = self.params
        if not params:
            return None
        # a plain loop, not a generator: routing asks this of every Route and Request-URI
        lname = name.lower()
        for pname, pvalue in params:
            if pname == lname or pname.lower() == lname:
                return "" if pvalue is None else pvalue
        return None

    def has_param(self, name: str) -> bool:
        params = self.params
        if not params:
            return False
        lname = name.lower()
        for pname, _ in params:  # noqa: SIM110 - any() over a generator costs two calls more
            if pname == lname or pname.lower() == lname:
                return True
        return False

    def with_param(self, name: str, value: str | None = None) -> SipURI:
        """A copy with parameter `name` set (value None: a flag like ";lr")."""
        return replace(self, params=with_param(self.params, name, value))

    @property
    def transport(self) -> str | None:
        """The `transport` parameter lower-cased ("udp", "tcp"...), None when absent."""
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def aor(self) -> str:
        """Address of record: `scheme:user@host` (port, parameters and headers dropped) - the form
        OpenSIPS presence uses for presentity and watcher URIs."""
        if self.scheme == "tel":
            return f"tel:{self.user}"
        if self.user is None:
            return f"{self.scheme}:{self.host}"
        return f"{self.scheme}:{self.user}@{self.host}"

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        # one f-string from its optional parts (no list appends: every NOTIFY writes several URIs)
        user = self.user
        userinfo = "" if user is None else f"{user}@" if self.password is None else f"{user}:{self.password}@"
        port = "" if self.port is None else f":{self.port}"
        params = format_params(self.params) if self.params else ""
        headers = "?" + "&".join([f"{n}={v}" for n, v in self.headers]) if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{params}{headers}"


(_set_scheme, _set_user, _set_password, _set_host, _set_port, _set_params,
 _set_headers) = slot_setters(SipURI)


def _new_uri(scheme: str, user: str | None, password: str | None, host: str, port: int | None,
             params: Params, headers: tuple[tuple[str, str], ...]) -> SipURI:
    """SipURI(...) for the parser's checked parts, without __init__'s object.__setattr__ (_fast.py)."""
    uri = object.__new__(SipURI)
    _set_scheme(uri, scheme)
    _set_user(uri, user)
    _set_password(uri, password)
    _set_host(uri, host)
    _set_port(uri, port)
    _set_params(uri, params)
    _set_headers(uri, headers)
    return uri


def _split_uri_params(text: str) -> Params:
    # `text` already matched `*( ";" uri-parameter )`: one findall splits it exactly ("=" kept apart
    # from the value, so ";x=" (empty value) and ";x" (a flag) stay distinct).
    if not text:
        return ()
    return tuple([(name, value if eq else None) for name, eq, value in _URI_PARAM.findall(text)])


_URI_PARAM = re.compile(rf";({_abnf.paramchar}+)(?:(=)({_abnf.paramchar}*))?")


# Parsed URIs by their text (_memo.py): the Request-URIs and the URIs of Routes, To and From repeat.
_URI_MEMO: dict[str, SipURI] = {}


def parse_uri(text: str) -> SipURI:
    """Parse a SIP/SIPS (also pres/im) or tel URI. Other schemes: ParseError 416; bad syntax: 400."""
    memo = _URI_MEMO
    if text in memo:   # `in` and `[]`: no method call for a URI seen before
        return memo[text]
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    if len(text) > _MAX_URI_LENGTH:
        raise ParseError("URI too long")
    m = _abnf.SIP_URI.fullmatch(text)
    if m is not None:
        scheme, user, password, host, port_text, params, headers_text = m.groups()
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                raise ParseError("Bad URI port")
        headers: tuple[tuple[str, str], ...] = ()
        if headers_text:
            headers = tuple(
                (name, value) for name, _, value in (h.partition("=") for h in headers_text.split("&"))
            )
        uri = memo[text] = _new_uri(
            scheme if scheme == "sip" else scheme.lower(),
            user, password, host, port,
            _split_uri_params(params) if params else (),
            headers,
        )
        return uri
    m = _abnf.TEL_URI.fullmatch(text)
    if m is not None:
        params_text = m.group("params")
        uri = memo[text] = SipURI("tel", m.group("user"), None, "", None, _split_uri_params(params_text))
        return uri
    scheme = _abnf.URI_SCHEME.match(text)
    if scheme is not None and scheme.group("scheme").lower() not in ("sip", "sips", "tel", "pres", "im"):
        raise ParseError("Unsupported URI Scheme", 416)
    raise ParseError("Bad URI")
