"""The presentity of a BLA subscription (`Event: dialog;sla`, draft-anil-sipping-bla).

OpenSIPS presence (bla_presentity_spec): "By default the presentity uri for BLA subscribes
(event=dialog;sla) is computed from contact username + from domain"; with bla_presentity_spec set "to
the name of a pseudovariable", the script sets that variable before handle_subscribe and its URI is
the presentity. Measured (OPENSIPS-BEHAVIOUR): user@host of the value, port and parameters dropped;
a value that is not a URI -> 400; set but empty -> 400.

Choice: a pseudo-variable that is not set at all (NULL) falls back to the default computation, so a
script can set it only for the phones behind an SBC.
"""

from __future__ import annotations

import re
from typing import Any

from .events import BodyError, PresenceEvent

__all__ = ["BLA_EVENT_NAME", "PvSpec", "bla_presentity", "bla_presentity_from_value", "is_bla",
           "parse_pv_spec"]

BLA_EVENT_NAME = "dialog;sla"
BAD_REQUEST = (400, "Bad request")

# "$name" or "$name(key)" - the pseudo-variable forms a modparam can name (OpenSIPS pv_parse_spec).
_PV_SPEC = re.compile(r"\$\(?([A-Za-z_][A-Za-z0-9_.]*)(?:\(([^()]*)\))?\)?\Z")

PvSpec = tuple[str, "str | None"]


def parse_pv_spec(text: str) -> PvSpec:
    """"$var(bla_pres)" -> ("var", "bla_pres"); "$avp(x)" -> ("avp", "x"). Raises ValueError."""
    match = _PV_SPEC.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a pseudo-variable (expected e.g. \"$var(bla_pres)\")")
    return match.group(1), match.group(2)


def is_bla(event: PresenceEvent) -> bool:
    return event.package == "dialog" and any(name == "sla" for name, _ in event.params)


def _pres_uri(user: str, host: str) -> str:
    # OpenSIPS builds the presentity as "sip:" user "@" host (uandd_to_uri), whatever the URI's scheme.
    return f"sip:{user}@{host}" if user else f"sip:{host}"


def bla_presentity_from_value(value: Any) -> str:
    """The BLA presentity from the bla_presentity_spec pseudo-variable's value: "sip:user@host" of the URI
    it holds (port and parameters dropped). Empty or not a SIP URI: `BodyError` 400."""
    from routescript.sip import ParseError, parse_uri

    text = value.strip() if isinstance(value, str) else ("" if value is None else str(value))
    if not text:
        raise BodyError(*BAD_REQUEST)
    try:
        uri = parse_uri(text)
    except ParseError:
        raise BodyError(*BAD_REQUEST) from None
    if uri.scheme not in ("sip", "sips") or not uri.host:
        raise BodyError(*BAD_REQUEST)
    return _pres_uri(uri.user or "", uri.host.lower())


def bla_presentity(msg: Any, spec_value: Any = None, *, use_spec: bool = False) -> str:
    """The presentity of a BLA SUBSCRIBE `msg` (a routescript.sip SIPRequest): the Contact URI's user at
    the From URI's host; with `use_spec` (bla_presentity_spec set and its variable set) the value
    `spec_value` instead (see bla_presentity_from_value). A missing or malformed Contact/From, or a
    Contact without a user: `BodyError` 400."""
    from routescript.sip import ParseError

    if use_spec:
        return bla_presentity_from_value(spec_value)
    try:
        contacts = msg.contacts
        from_uri = msg.from_.uri
    except ParseError:
        raise BodyError(*BAD_REQUEST) from None
    contact = next((c for c in contacts if not c.star and c.uri is not None), None)
    if contact is None or not contact.uri.user or not from_uri.host:
        raise BodyError(*BAD_REQUEST)
    return _pres_uri(contact.uri.user, from_uri.host.lower())
