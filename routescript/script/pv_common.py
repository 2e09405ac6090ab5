"""Shared by the core pseudo-variables: limits, index rules ([n], [-1], [*]), the value a script variable
may hold, and small helpers for the message, URIs and key names (see pvars.py for the rules)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from routescript.sip import header_key

from .context import MsgContext

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
