"""The `uri.` class of core transformations: parts of a SIP URI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from routescript.sip import ParseError, SipURI, parse_uri

from .tr_common import _nonempty_text, _name_param


# ---------------------------------------------------------------------------------------------------
# uri.

def _parse_uri(value: Any) -> SipURI:
    text = _nonempty_text(value, "uri transformation")
    try:
        return parse_uri(text)
    except ParseError:
        raise ValueError(f"not a valid URI: {text!r}") from None


def _uri_param(uri: SipURI, name: str) -> str | None:
    lname = name.lower()
    for pname, pvalue in uri.params:
        if pname.lower() == lname:
            return "" if pvalue is None else pvalue
    return None


def _none_if_empty(text: str | None) -> str | None:
    return text if text not in (None, "") else None


def uri_user(value: Any) -> str | None:
    return _none_if_empty(_parse_uri(value).user)


def uri_host(value: Any) -> str | None:
    return _none_if_empty(_parse_uri(value).host)


def uri_passwd(value: Any) -> str | None:
    return _none_if_empty(_parse_uri(value).password)


def uri_port(value: Any) -> int | None:
    """{uri.port}: the port written in the URI, None when there is none (OpenSIPS 3.x)."""
    port = _parse_uri(value).port
    return int(port) if port is not None else None


def uri_params(value: Any) -> str | None:
    """{uri.params}: the parameters as written, without the leading ';'."""
    params = _parse_uri(value).params
    if not params:
        return None
    return ";".join(n if v is None else f"{n}={v}" for n, v in params)


def uri_param(value: Any, name: Any) -> str | None:
    """{uri.param,name}: the value ("" for a flag parameter like lr), None when absent."""
    return _uri_param(_parse_uri(value), _name_param(name, "uri.param"))


def uri_headers(value: Any) -> str | None:
    headers = _parse_uri(value).headers
    if not headers:
        return None
    if isinstance(headers, str):
        return headers.lstrip("?")
    return "&".join(n if v is None else f"{n}={v}" for n, v in headers)


def _uri_named_param(pname: str) -> Callable[[Any], str | None]:
    def fn(value: Any) -> str | None:
        return _none_if_empty(_uri_param(_parse_uri(value), pname))

    fn.__name__ = f"uri_{pname}"
    return fn


def uri_scheme(value: Any) -> str:
    return _parse_uri(value).scheme
