"""presence_dialoginfo force_dummy_dialog: a document without any dialog carries a terminated dummy one
(phones that choke on an empty dialog-info); off (the default), OpenSIPS 3.4's empty document."""

from lxml import etree

from routescript.modules.presence_dialoginfo import aggregate_dialog_info, dialog_event, empty_dialog_info

NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}
LIVE = (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:b@x">'
        b'<dialog id="c1" direction="recipient"><state>early</state></dialog></dialog-info>')


def dialogs(body: bytes) -> list[tuple[str | None, str | None]]:
    return [(d.get("id"), d.findtext("d:state", namespaces=NS))
            for d in etree.fromstring(body).findall("d:dialog", NS)]


def test_dummy_only_where_no_dialog_is_left() -> None:
    assert dialogs(empty_dialog_info("sip:b@x")) == []
    assert dialogs(empty_dialog_info("sip:b@x", force_dummy_dialog=True)) == [("dummy-idle", "terminated")]
    # the last publication being removed (off_index): the dummy stands in
    assert dialogs(aggregate_dialog_info("sip:b@x", [LIVE], 0, force_dummy_dialog=True)) == \
        [("dummy-idle", "terminated")]
    assert dialogs(aggregate_dialog_info("sip:b@x", [LIVE], 0)) == []
    # a live dialog: no dummy
    assert dialogs(aggregate_dialog_info("sip:b@x", [LIVE], force_dummy_dialog=True)) == [("c1", "early")]
    event = dialog_event(force_dummy_dialog=True)
    assert event.build_empty_pres_info is not None
    assert dialogs(bytes(event.build_empty_pres_info("sip:b@x"))) == [("dummy-idle", "terminated")]
