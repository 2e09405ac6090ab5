"""What bla_handle_notify reads from a shared-line phone's NOTIFY (OpenSIPS pua_bla notify.c), sans-IO:
the dialog it belongs to, the line (To URI), the phone (Contact), how long its state holds
(Subscription-State) and its dialog-info body, checked as OpenSIPS checks it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from routescript.sip import ParseError

__all__ = ["DEFAULT_EXPIRES", "BadNotify", "BlaNotify", "read_bla_notify", "subscription_expires"]

DEFAULT_EXPIRES = 3600     # OpenSIPS pua_bla: an active/pending state without expires=
MAX_BODY = 65536           # bound: a dialog-info body larger than this is refused

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)

# RFC 6665 8.4: Subscription-State = substate-value *( SEMI subexp-params ),
#   subexp-params = ("reason" EQUAL event-reason-value) / ("expires" EQUAL delta-seconds) / ...
_EXPIRES = re.compile(r"\A\s*expires\s*=\s*(\d{1,10})\s*\Z", re.IGNORECASE)


class BadNotify(Exception):
    """The NOTIFY cannot be turned into a publication (the script replies, e.g. 400)."""


@dataclass(frozen=True, slots=True)
class BlaNotify:
    call_id: str
    our_tag: str          # its To tag: the From tag of our SUBSCRIBE
    their_tag: str        # its From tag
    line_uri: str         # its To URI: the watcher URI we subscribed as, the shared line
    contact: str          # the phone's Contact URI: the publication's id and its Sender
    expires: int          # 0: the subscription is terminated
    body: bytes           # empty: nothing to publish


def subscription_expires(value: str | None) -> int:
    """The Expires a Subscription-State gives the state: terminated -> 0; active/pending -> its
    expires parameter, else DEFAULT_EXPIRES. Raises BadNotify for none or another value."""
    if value is None:
        raise BadNotify("no Subscription-State header")
    substate, *params = value.split(";")
    substate = substate.strip().lower()
    if substate == "terminated":
        return 0
    if substate not in ("active", "pending"):
        raise BadNotify(f"unknown Subscription-State {substate!r}")
    for param in params:
        if param.strip().lower().startswith("expires"):
            match = _EXPIRES.match(param)
            if match is None:
                raise BadNotify(f"bad expires in Subscription-State {value!r}")
            return int(match.group(1))
    return DEFAULT_EXPIRES


def check_dialog_info(body: bytes) -> None:
    """OpenSIPS bla_body_is_valid: one root, <dialog-info>, whose element children are all <dialog>.
    Raises BadNotify."""
    if len(body) > MAX_BODY:
        raise BadNotify(f"body of {len(body)} bytes (at most {MAX_BODY})")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise BadNotify(f"invalid XML body: {exc}") from None
    if etree.QName(root).localname.lower() != "dialog-info":
        raise BadNotify(f"invalid body: <{etree.QName(root).localname}> instead of <dialog-info>")
    for child in root:
        if isinstance(child.tag, str) and etree.QName(child).localname.lower() != "dialog":
            raise BadNotify(f"invalid body: <{etree.QName(child).localname}> inside <dialog-info>")


def read_bla_notify(msg: object) -> BlaNotify:
    """The facts of a NOTIFY (a routescript.sip SIPRequest). Raises BadNotify."""
    try:
        to, from_ = msg.to, msg.from_                  # type: ignore[attr-defined]
        call_id = msg.call_id                          # type: ignore[attr-defined]
        contacts = msg.contacts                        # type: ignore[attr-defined]
        state = msg.header("Subscription-State")       # type: ignore[attr-defined]
        body = bytes(msg.body)                         # type: ignore[attr-defined]
    except ParseError as exc:
        raise BadNotify(f"unreadable header: {exc}") from None
    if not to.tag:
        raise BadNotify("no To tag")
    if not from_.tag:
        raise BadNotify("no From tag")
    contact = next((c for c in contacts if not c.star and c.uri is not None), None)
    if contact is None:
        raise BadNotify("no Contact")
    expires = subscription_expires(state)
    if body:
        check_dialog_info(body)
    return BlaNotify(call_id, to.tag, from_.tag, str(to.uri), str(contact.uri), expires, body)
