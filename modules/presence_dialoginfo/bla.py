"""BLA - bridged line appearance (`Event: dialog;sla`, draft-anil-sipping-bla): the presentity of a BLA
SUBSCRIBE, the remote-target fix of the NOTIFY body (presence modparam bla_fix_remote_target), and the
event package.

OpenSIPS presence (documentation of bla_presentity_spec): "By default the presentity uri for BLA subscribes
(event=dialog;sla) is computed from contact username + from domain"; with bla_presentity_spec set, it is the
URI the script put in that pseudo-variable. Measured (OPENSIPS-BEHAVIOUR): user@host of the value, port and
parameters dropped; a value that is not a URI, or an empty one, is answered 400.

bla_fix_remote_target (OpenSIPS presence doc): "Polycom has a bug in the bla implementation. It inserts the
remote IP contact in the Notify body and when a phone picks up a call put on hold by another phone in the
same BLA group, it sends an Invite directly to the remote IP. OpenSIPS BLA server tries to prevent this by
replacing the IP contact with the domain, when this is possible." OpenSIPS does it by replacing each
`<remote><target uri=...>` with the remote `<identity>`. We do the same, with two choices of our own:
only a target whose host is an IP address is touched (a target naming a domain already routes through the
proxy), and when the remote identity is missing or is itself an IP URI the target keeps its user and gets
the presentity's domain as host (port and parameters dropped) - OpenSIPS gives up on the whole body then.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from lxml import etree

from routescript.modules.presence.bla import BLA_EVENT_NAME, bla_presentity, bla_presentity_from_value
from routescript.modules.presence.events import BodyError, PresenceEvent
from routescript.modules.presence_xml.xml_util import parse_xml, qname, serialize, xml_safe
from routescript.sip import ParseError, parse_uri

from .dialoginfo import (CONTENT_TYPE, NS_DIALOG_INFO, _aux_set_version, aggregate_dialog_info,
                         check_dialog_info)

__all__ = [
    "BLA_EVENT_NAME",
    "bla_event",
    "bla_presentity",
    "bla_presentity_from_value",
    "fix_remote_target",
    "fix_remote_target_doc",
]

BAD_REQUEST = (400, "Bad request")

_DIALOG_INFO = qname(NS_DIALOG_INFO, "dialog-info")
_DIALOG = qname(NS_DIALOG_INFO, "dialog")
_REMOTE = qname(NS_DIALOG_INFO, "remote")
_TARGET = qname(NS_DIALOG_INFO, "target")
_IDENTITY = qname(NS_DIALOG_INFO, "identity")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return False
    return True


def _domain_of(pres_uri: str) -> str:
    rest = pres_uri.split(":", 1)[1] if ":" in pres_uri else pres_uri
    return rest.rpartition("@")[2].split(";", 1)[0]


def _fixed_target(target_uri: str, identity: str | None, domain: str) -> str | None:
    """The target to put instead of `target_uri`, or None to leave it."""
    try:
        uri = parse_uri(target_uri.strip())
    except ParseError:
        return None
    if uri.scheme not in ("sip", "sips") or not _is_ip(uri.host):
        return None
    if identity:
        try:
            ident = parse_uri(identity.strip())
        except ParseError:
            ident = None
        if ident is not None and ident.scheme in ("sip", "sips") and not _is_ip(ident.host):
            return identity.strip()
    if not domain or _is_ip(domain):
        return None  # nothing better to offer than the address itself
    return f"{uri.scheme}:{uri.user}@{domain}" if uri.user else f"{uri.scheme}:{domain}"


def fix_remote_target_doc(root: etree._Element, pres_uri: str) -> None:
    """Rewrite, in place, every `<dialog><remote><target uri=IP-URI>` of a dialog-info document (see the
    module docstring). Target `<param>` children are kept."""
    domain = _domain_of(pres_uri)
    for dialog in root.iterchildren(_DIALOG):
        remote = dialog.find(_REMOTE)
        if remote is None:
            continue
        identity_element = remote.find(_IDENTITY)
        identity = identity_element.text if identity_element is not None else None
        for target in remote.iterchildren(_TARGET):
            fixed = _fixed_target(target.get("uri") or "", identity, domain)
            if fixed is not None:
                target.set("uri", xml_safe(fixed, "BLA remote target", pres_uri))


def fix_remote_target(body: bytes, pres_uri: str) -> bytes:
    """fix_remote_target_doc on a document given as bytes. Raises `BodyError` when it is not dialog-info."""
    root = parse_xml(body)
    if root.tag != _DIALOG_INFO:
        raise BodyError(*BAD_REQUEST)
    fix_remote_target_doc(root, pres_uri)
    return serialize(root)


def bla_event(*, fix_remote_target: bool = True) -> PresenceEvent:
    """The `dialog;sla` event package (OpenSIPS registers it from presence_xml): no authorization, the
    publications aggregated like `dialog` (remote targets fixed when `fix_remote_target`, the presence
    modparam bla_fix_remote_target), the version set per watcher; no body when nothing is published
    (measured: the first NOTIFY of a BLA subscription is active without a body)."""
    fix = fix_remote_target_doc if fix_remote_target else None

    def agg_nbody(pres_uri: str, bodies: Sequence[bytes], off_index: int | None) -> bytes:
        return aggregate_dialog_info(pres_uri, bodies, off_index, fix=fix)

    # etag_not_new: OpenSIPS keeps one ETag per BLA publication (its presence_xml registration).
    return PresenceEvent(BLA_EVENT_NAME, CONTENT_TYPE, default_expires=3600, etag_not_new=True,
                         agg_nbody=agg_nbody, evs_publ_handl=check_dialog_info,
                         aux_body_processing=_aux_set_version)
