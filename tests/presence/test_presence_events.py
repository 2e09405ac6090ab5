import pytest

from routescript.modules.presence.events import (PUBL_TYPE, WINFO_TYPE, EventRegistry, PresenceEvent,
                                                 parse_event_name)


def registry_like_opensips() -> EventRegistry:
    # presence_xml registers presence, presence.winfo, dialog;sla; then presence_mwi, presence_dialoginfo.
    reg = EventRegistry()
    reg.add_event(PresenceEvent("presence", "application/pidf+xml"))
    reg.add_event(PresenceEvent("presence.winfo", "application/watcherinfo+xml", type=WINFO_TYPE))
    reg.add_event(PresenceEvent("dialog;sla", "application/dialog-info+xml", etag_not_new=True))
    reg.add_event(PresenceEvent("message-summary", "application/simple-message-summary"))
    reg.add_event(PresenceEvent("dialog", "application/dialog-info+xml"))
    return reg


def test_allow_events_in_opensips_order():
    # captures 13, 14, 16
    assert registry_like_opensips().get_event_list() == \
        "dialog, message-summary, dialog;sla, presence.winfo, presence"


def test_parse_event_name():
    assert parse_event_name("dialog;sla") == ("dialog", (("sla", None),))
    assert parse_event_name("Presence.winfo") == ("presence.winfo", ())
    assert parse_event_name("presence;id=7") == ("presence", (("id", "7"),))
    with pytest.raises(ValueError):
        parse_event_name("")
    with pytest.raises(ValueError):
        parse_event_name("pres ence")
    with pytest.raises(ValueError):
        parse_event_name("dialog;=x")


def test_search_event_by_package_and_params():
    reg = registry_like_opensips()
    assert reg.search_event("dialog").name == "dialog"
    assert reg.search_event("dialog", [("sla", None)]).name == "dialog;sla"
    assert reg.search_event("PRESENCE").name == "presence"
    assert reg.search_event("presence", [("id", "42")]).name == "presence"  # id is not part of the package
    assert reg.search_event("dialog", [("foo", None)]) is None
    assert reg.search_event("foo") is None
    assert reg.contains_event("dialog;sla").etag_not_new is True
    assert reg.contains_event("bad name;") is None


def test_add_event_twice_keeps_first():
    reg = EventRegistry()
    first = reg.add_event(PresenceEvent("presence", "application/pidf+xml", default_expires=100))
    again = reg.add_event(PresenceEvent("presence", "application/xpidf+xml"))
    assert again is first and len(reg) == 1


def test_event_checks():
    with pytest.raises(ValueError):
        PresenceEvent("presence", "")
    with pytest.raises(ValueError):
        PresenceEvent("presence", "application/pidf+xml", req_auth=True)


def test_wipeer_and_codes():
    reg = registry_like_opensips()
    pres = reg.contains_event("presence")
    winfo = reg.contains_event("presence.winfo")
    assert reg.wipeer(pres) is winfo and reg.wipeer(winfo) is pres
    assert reg.wipeer(reg.contains_event("dialog")) is None
    codes = (pres.code, reg.contains_event("dialog").code, reg.contains_event("message-summary").code)
    assert codes == (1, 5, 6)
    assert pres.type == PUBL_TYPE and winfo.type == WINFO_TYPE


def test_wipeer_remembered_per_registered_package_and_forgotten_when_one_is_added():
    """Issue 18: the watcher-info peer is looked up once per package (it is asked for every SUBSCRIBE);
    a package registered later is seen, and an unregistered event object is answered by its own name."""
    reg = EventRegistry()
    presence = reg.add_event(PresenceEvent("presence", "application/pidf+xml"))
    assert reg.wipeer(presence) is None and reg.wipeer(presence) is None
    winfo = reg.add_event(PresenceEvent("presence.winfo", "application/watcherinfo+xml", type=WINFO_TYPE))
    assert reg.wipeer(presence) is winfo and reg.wipeer(presence) is winfo
    assert reg.wipeer(winfo) is presence
    stray = PresenceEvent("presence.winfo", "text/plain")   # not registered, not a winfo type
    assert reg.wipeer(stray) is None
    assert reg.wipeer(winfo) is presence
