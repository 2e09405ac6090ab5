"""The dialog-info document (RFC 4235) pua_dialoginfo publishes for one side of one dialog.

The shape, chosen for what desk phones' BLF keys (Yealink, Polycom, Cisco/Linksys SPA, Snom, Grandstream)
and call pickup read, and what OpenSIPS 3.4's pua_dialoginfo (dialog_publish.c build_dialoginfo) writes:

    <?xml version='1.0' encoding='UTF-8'?>
    <dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full"
                 entity="sip:bob@example.com">
      <dialog id="a84b4c76e66710" call-id="a84b4c76e66710" local-tag="456887766"
              remote-tag="1928301774" direction="recipient">
        <state>early</state>
        <local>
          <identity display="Bob">sip:bob@example.com</identity>
          <target uri="sip:bob@example.com"/>
        </local>
        <remote>
          <identity display="Alice">sip:alice@example.com</identity>
          <target uri="sip:alice@example.com"/>
        </remote>
      </dialog>
    </dialog-info>

- version "0": the presence server numbers the NOTIFYs per watcher (RFC 4235 4.1; our presence and
  OpenSIPS's rewrite it - OpenSIPS's osips_ps trick); state "full": the publication carries the whole
  state of this dialog (OpenSIPS writes "partial", which RFC 4235 reserves for a NOTIFY that carries only
  changes - a phone taking it at face value would keep stale dialogs; the presence server sends "full"
  either way).
- dialog id = the Call-ID (OpenSIPS before 3.x; the dialog module creates one dialog per INVITE, so it
  is unique per presentity); call-id, local-tag, remote-tag (include_callid / include_tags: what
  directed call pickup puts in its Replaces header) - the remote-tag only once the callee's To tag is known.
- direction "initiator" for the caller's publication, "recipient" for the callee's (Yealink and Polycom
  blink the BLF key on early+recipient: a call to pick up; a caller's early dialog is shown as "calling").
- <local>/<remote> (include_localremote): identity with the display name when known, target the URI
  (Polycom and Yealink show the remote identity on the key; pickup dials the local identity's user).
- The XML declaration and the default namespace, no prefixes: some phones' parsers match literal
  "<dialog-info" and "<state>".
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

__all__ = ["DIALOG_STATES", "NS", "Party", "build_dialoginfo"]

NS = "urn:ietf:params:xml:ns:dialog-info"
DIALOG_STATES = ("trying", "proceeding", "early", "confirmed", "terminated")   # RFC 4235 <state>


@dataclass(frozen=True, slots=True)
class Party:
    """One end of the dialog: its URI (the publication's entity for the local side) and display name."""

    uri: str
    display: str | None = None
    target: str | None = None      # the contact, when known (else the URI is the target)


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def build_dialoginfo(state: str, local: Party, remote: Party, *, call_id: str, initiator: bool,
                     local_tag: str | None, remote_tag: str | None, dialog_id: str | None = None,
                     include_callid: bool = True, include_tags: bool = True,
                     include_localremote: bool = True) -> bytes:
    """The dialog-info document of `local`'s side of one dialog in `state`. Raises ValueError for a
    state RFC 4235 does not know or a value XML cannot carry (control characters)."""
    if state not in DIALOG_STATES:
        raise ValueError(f"not a dialog state: {state!r}")
    root = etree.Element(_q("dialog-info"), nsmap={None: NS})
    root.set("version", "0")
    root.set("state", "full")
    root.set("entity", local.uri)
    dialog = etree.SubElement(root, _q("dialog"))
    dialog.set("id", dialog_id or call_id)
    if include_callid:
        dialog.set("call-id", call_id)
    if include_tags:
        if local_tag:
            dialog.set("local-tag", local_tag)
        if remote_tag:
            dialog.set("remote-tag", remote_tag)
    dialog.set("direction", "initiator" if initiator else "recipient")
    etree.SubElement(dialog, _q("state")).text = state
    if include_localremote:
        for tag, party in (("local", local), ("remote", remote)):
            element = etree.SubElement(dialog, _q(tag))
            identity = etree.SubElement(element, _q("identity"))
            identity.text = party.uri
            if party.display:
                identity.set("display", party.display)
            etree.SubElement(element, _q("target")).set("uri", party.target or party.uri)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
