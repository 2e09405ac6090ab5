"""dialog-info documents for the `dialog` event (RFC 4235, application/dialog-info+xml): the PUBLISH body
check, the aggregation of a presentity's publications into one NOTIFY body, the per-watcher `version`, and
the empty document sent when nothing is published.

Pure functions, bytes in, bytes out. RFC 4235 section 4 (schema), the part relied on here:
    <xs:element name="dialog-info"> sequence: dialog*, any ##other*;
        attribute version nonNegativeInteger required; state "full" | "partial" required;
        attribute entity anyURI required
    <xs:element name="dialog"> sequence: state, duration?, replaces?, referred-by?, route-set?, local?,
        remote?, any ##other*; attribute id string required; call-id, local-tag, remote-tag, direction
    <xs:element name="state"> "trying" | "proceeding" | "early" | "confirmed" | "terminated"
    <xs:element name="remote"> identity?, target?, session-description?;  target: attribute uri required
RFC 4235 section 4.1: version starts at 0 and grows by one with each NOTIFY of the subscription; the
notifier keeps it per watcher, so the presence core calls `set_version` for every NOTIFY
(aux_body_processing).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Sequence

from lxml import etree

from routescript.modules.presence.events import BodyError, PresenceEvent
from routescript.modules.presence_xml.xml_util import parse_xml, qname, serialize, xml_safe

__all__ = [
    "CONTENT_TYPE",
    "EVENT_NAME",
    "NS_DIALOG_INFO",
    "STATE_PRIORITY",
    "aggregate_dialog_info",
    "check_dialog_info",
    "dialog_event",
    "empty_dialog_info",
    "set_version",
]

log = logging.getLogger(__name__)

EVENT_NAME = "dialog"
CONTENT_TYPE = "application/dialog-info+xml"
NS_DIALOG_INFO = "urn:ietf:params:xml:ns:dialog-info"

_DIALOG_INFO = qname(NS_DIALOG_INFO, "dialog-info")
_DIALOG = qname(NS_DIALOG_INFO, "dialog")
_STATE = qname(NS_DIALOG_INFO, "state")

BAD_REQUEST = (400, "Bad request")

# force_single_dialog: the most interesting dialog wins (OpenSIPS get_dialog_state_priority, least
# important first); an unknown or missing state counts as terminated.
STATE_PRIORITY = {"terminated": 0, "trying": 1, "proceeding": 2, "confirmed": 3, "early": 4}

# A hook that rewrites the aggregated document in place (BLA's remote-target fix), given the presentity URI.
DocumentFix = Callable[[etree._Element, str], None]


def _parse_dialog_info(body: bytes) -> etree._Element:
    root = parse_xml(body)
    if root.tag != _DIALOG_INFO:
        raise BodyError(*BAD_REQUEST)
    return root


def check_dialog_info(body: bytes) -> None:
    """evs_publ_handl for `dialog` and `dialog;sla`: raise `BodyError` for a body to refuse.

    - not well-formed XML, or with a DOCTYPE: 415 "Unsupported media type" (what OpenSIPS's XML packages
      answer; OpenSIPS 3.4 presence_dialoginfo checks nothing and later drops the body from every NOTIFY -
      refusing it at PUBLISH tells the publisher instead);
    - too large: 413; nested too deep: 400;
    - root not `<dialog-info>` in the dialog-info namespace, or a `<dialog>` without `id`: 400 "Bad request".
    The root's version/state/entity are not required: they are rewritten for every NOTIFY anyway.
    An empty body is accepted (a refresh; the presence core judges it).
    """
    if not body:
        return
    root = _parse_dialog_info(body)
    for dialog in root.iterchildren(_DIALOG):
        if not (dialog.get("id") or "").strip():
            raise BodyError(*BAD_REQUEST)


def _new_root(pres_uri: str) -> etree._Element:
    root = etree.Element(_DIALOG_INFO, nsmap={None: NS_DIALOG_INFO})
    # version is a placeholder: set_version writes each watcher's own value.
    root.set("version", "0")
    root.set("state", "full")
    root.set("entity", xml_safe(pres_uri, "dialog-info entity", pres_uri))
    return root


# force_dummy_dialog: the dialog every document without one carries (Kamailio's presence_dialoginfo
# parameter of the same name). Phones that choke on a dialog-info without <dialog> (older Yealink, some
# Grandstream and Cisco SPA firmwares leave the BLF key in its last state or show it unknown) take a
# terminated dialog as idle.
DUMMY_DIALOG_ID = "dummy-idle"


def _add_dummy_dialog(root: etree._Element) -> None:
    dialog = etree.SubElement(root, _DIALOG)
    dialog.set("id", DUMMY_DIALOG_ID)
    dialog.set("direction", "recipient")
    etree.SubElement(dialog, _STATE).text = "terminated"


def empty_dialog_info(pres_uri: str, *, force_dummy_dialog: bool = False) -> bytes:
    """The document sent when the presentity has published nothing (build_empty_pres_info):
        <dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="..."/>
    (OpenSIPS 3.4 as measured; older OpenSIPS added a dummy terminated dialog, which RFC 4235 does not need.)
    force_dummy_dialog: with that dummy terminated dialog (DUMMY_DIALOG_ID), for phones that need one.
    """
    root = _new_root(pres_uri)
    if force_dummy_dialog:
        _add_dummy_dialog(root)
    return serialize(root)


def _dialog_state(dialog: etree._Element) -> str:
    state = dialog.find(_STATE)
    return (state.text or "").strip().lower() if state is not None else ""


def aggregate_dialog_info(pres_uri: str, bodies: Sequence[bytes], off_index: int | None = None, *,
                          force_single_dialog: bool = False, fix: DocumentFix | None = None,
                          force_dummy_dialog: bool = False) -> bytes:
    """agg_nbody for `dialog`: one full dialog-info document from all live publications of `pres_uri`.

    `bodies` are oldest first. The result is `<dialog-info version="0" state="full" entity=pres_uri>` with
    every publication's `<dialog>` (and other top-level extension elements) in that order. A dialog id
    published twice (a device re-publishing a dialog from another ETag) appears once: the newest wins, at
    the newest position. `off_index`: the publication being removed - it is left out (a removed dialog
    simply disappears from the full state). A body that does not parse is left out with a warning (bodies
    are checked at PUBLISH; only rows written by something else can be bad).
    force_single_dialog (modparam): keep only the dialog whose state is most interesting, per
    STATE_PRIORITY, the first one on a tie. `fix`: a rewrite applied to the document (BLA).
    Nothing left: the empty document. force_dummy_dialog: a document without any <dialog> (the last
    call's publication just removed) gets the dummy terminated dialog of empty_dialog_info.
    """
    roots: list[etree._Element] = []
    for index, body in enumerate(bodies):
        if index == off_index or not body:
            continue
        try:
            roots.append(_parse_dialog_info(body))
        except BodyError as exc:
            log.warning("presentity %s: dialog publication %d left out of the NOTIFY body: %s",
                        pres_uri, index, exc)
    # Newest first, to keep the newest copy of a duplicated dialog id; then back to received order.
    seen: set[str] = set()
    chosen: list[etree._Element] = []
    for root in reversed(roots):
        for child in reversed(list(root)):
            if not isinstance(child.tag, str):
                continue  # comments and processing instructions are not carried
            if child.tag == _DIALOG:
                dialog_id = child.get("id") or ""
                if dialog_id in seen:
                    continue
                seen.add(dialog_id)
            chosen.append(child)
    chosen.reverse()
    if force_single_dialog:
        dialogs = [c for c in chosen if c.tag == _DIALOG]
        if len(dialogs) > 1:
            best = max(dialogs, key=lambda d: STATE_PRIORITY.get(_dialog_state(d), 0))  # first max wins
            chosen = [c for c in chosen if c.tag != _DIALOG or c is best]
    merged = _new_root(pres_uri)
    for element in chosen:
        element_copy = copy.deepcopy(element)
        element_copy.tail = None
        merged.append(element_copy)
    if force_dummy_dialog and not any(c.tag == _DIALOG for c in chosen):
        _add_dummy_dialog(merged)
    etree.cleanup_namespaces(merged, top_nsmap={None: NS_DIALOG_INFO})
    if fix is not None:
        fix(merged, pres_uri)
    return serialize(merged)


# The root start tag and its version attribute, found without parsing again (the body is ours: either
# aggregate_dialog_info's or empty_dialog_info's output, so a textual rewrite is exact and cheap per watcher).
_ROOT_START = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?dialog-info\b[^>]*>")
_VERSION_ATTR = re.compile(rb"(\sversion\s*=\s*)(\"[^\"]*\"|'[^']*')")


def set_version(body: bytes, version: int) -> bytes:
    """aux_body_processing for `dialog`: the document with the root's `version` set to `version` (the number
    of NOTIFYs sent before this one in the subscription: 0 on the first, RFC 4235 4.1). A body without a
    dialog-info root is returned unchanged."""
    if version < 0:
        raise ValueError("version must not be negative")
    start = _ROOT_START.search(body)
    if start is None:
        return body
    tag = start.group(0)
    value = b'"%d"' % version
    match = _VERSION_ATTR.search(tag)
    if match is not None:
        new_tag = tag[:match.start(2)] + value + tag[match.end(2):]
    else:
        cut = len(tag) - (2 if tag.endswith(b"/>") else 1)
        new_tag = tag[:cut] + b" version=" + value + tag[cut:]
    return body[:start.start()] + new_tag + body[start.end():]


def _aux_set_version(subscription: object, body: bytes) -> bytes:
    # The presence core passes the record as it is before this NOTIFY is counted: `version` = NOTIFYs sent.
    return set_version(body, int(getattr(subscription, "version", 0)))


def dialog_event(*, force_single_dialog: bool = False, force_dummy_dialog: bool = False) -> PresenceEvent:
    """The `dialog` event package as OpenSIPS presence_dialoginfo registers it: no authorization, the
    publications aggregated, the version set per watcher, an empty document when nothing is published
    (mandatory_body); force_dummy_dialog: a dummy terminated dialog in every document without one."""

    def agg_nbody(pres_uri: str, bodies: Sequence[bytes], off_index: int | None) -> bytes:
        return aggregate_dialog_info(pres_uri, bodies, off_index, force_single_dialog=force_single_dialog,
                                     force_dummy_dialog=force_dummy_dialog)

    def empty(pres_uri: str) -> bytes:
        return empty_dialog_info(pres_uri, force_dummy_dialog=force_dummy_dialog)

    return PresenceEvent(EVENT_NAME, CONTENT_TYPE, default_expires=3600, mandatory_body=True,
                         agg_nbody=agg_nbody, evs_publ_handl=check_dialog_info,
                         aux_body_processing=_aux_set_version, build_empty_pres_info=empty)

