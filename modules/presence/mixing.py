"""mix_dialog_presence: the presence state derived from a presentity's dialog publications (OpenSIPS
presence presentity.c xml_dialog2presence / xml_dialog_gen_presence).

A user with a live dialog published under the `dialog` event (pua_dialoginfo, or a phone) is shown to
its `presence` watchers as on the phone, even when the phone publishes no presence itself. OpenSIPS's
generated PIDF, rebuilt here with the same ids and notes:

    <presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
              xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:c="urn:ietf:params:xml:ns:pidf:cipid"
              entity="sip:bob@example.com">
      <tuple id="tuple_mixingid"><status><basic>open</basic></status></tuple>
      <note>On the phone</note>
      <dm:person id="pers_mixingid">
        <rpid:activities><rpid:on-the-phone/></rpid:activities>
        <dm:note>On the phone</dm:note>
      </dm:person>
    </presence>

The note is "Proceeding" while the dialog is trying / proceeding / early and "On the phone" once it is
confirmed; a terminated dialog adds nothing (OpenSIPS's presence_notes). OpenSIPS reads the state of the
first <dialog> of the one dialog-info body just published; we read every live dialog publication of the
presentity and take the most advanced state (confirmed over the early ones), so a second call ringing
while the first is up does not turn "On the phone" into "Proceeding", and an expired or removed
publication is accounted for like a new one. Pure: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

__all__ = ["DIALOG_EVENT", "NOTE_CONFIRMED", "NOTE_EARLY", "PRESENCE_EVENT", "dialog_presence_body",
           "live_dialog_state"]

PRESENCE_EVENT = "presence"
DIALOG_EVENT = "dialog"
NS_DIALOG_INFO = "urn:ietf:params:xml:ns:dialog-info"
NS_PIDF = "urn:ietf:params:xml:ns:pidf"
NS_DM = "urn:ietf:params:xml:ns:pidf:data-model"
NS_RPID = "urn:ietf:params:xml:ns:pidf:rpid"
NS_CIPID = "urn:ietf:params:xml:ns:pidf:cipid"
NOTE_EARLY = "Proceeding"
NOTE_CONFIRMED = "On the phone"
MAX_BODY = 65536   # bound: larger bodies are not read (PUBLISH bodies are capped below this anyway)

# dialog state -> rank; the highest rank among the live dialogs decides the note.
_RANK = {"trying": 1, "proceeding": 1, "early": 1, "confirmed": 2}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)


def live_dialog_state(bodies: Iterable[bytes]) -> str | None:
    """"confirmed", "early" (trying/proceeding/early) or None (no dialog, or all terminated), from the
    dialog-info bodies of one presentity. A body that is not dialog-info XML is skipped."""
    best = 0
    for body in bodies:
        if not body or len(body) > MAX_BODY:
            continue
        try:
            root = etree.fromstring(bytes(body), _PARSER)
        except etree.XMLSyntaxError:
            continue
        for state in root.iter(f"{{{NS_DIALOG_INFO}}}state"):
            best = max(best, _RANK.get((state.text or "").strip().lower(), 0))
    return {0: None, 1: "early", 2: "confirmed"}[best]


def dialog_presence_body(pres_uri: str, dialog_bodies: Iterable[bytes]) -> bytes | None:
    """The PIDF document OpenSIPS generates from the presentity's dialog state, or None when it has no
    live dialog (nothing is added then)."""
    state = live_dialog_state(dialog_bodies)
    if state is None:
        return None
    note = NOTE_CONFIRMED if state == "confirmed" else NOTE_EARLY
    root = etree.Element(f"{{{NS_PIDF}}}presence",
                         nsmap={None: NS_PIDF, "dm": NS_DM, "rpid": NS_RPID, "c": NS_CIPID})
    root.set("entity", pres_uri)
    tup = etree.SubElement(root, f"{{{NS_PIDF}}}tuple", id="tuple_mixingid")
    status = etree.SubElement(tup, f"{{{NS_PIDF}}}status")
    etree.SubElement(status, f"{{{NS_PIDF}}}basic").text = "open"
    etree.SubElement(root, f"{{{NS_PIDF}}}note").text = note
    person = etree.SubElement(root, f"{{{NS_DM}}}person", id="pers_mixingid")
    activities = etree.SubElement(person, f"{{{NS_RPID}}}activities")
    etree.SubElement(activities, f"{{{NS_RPID}}}on-the-phone")
    etree.SubElement(person, f"{{{NS_DM}}}note").text = note
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
