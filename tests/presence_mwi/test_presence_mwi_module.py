"""presence_mwi glue: loading the module registers message-summary with presence, in OpenSIPS's order."""

import pytest

from routescript.core.server import Server

CFG = """
socket=udp:127.0.0.1:5060
loadmodule "presence.so"
{extra}
route {{ exit; }}
"""


def load(tmp_path, extra):
    path = tmp_path / "mwi.cfg"
    path.write_text(CFG.format(extra=extra))
    server = Server()
    server.load(str(path))
    return server


def test_loading_registers_message_summary(tmp_path):
    server = load(tmp_path, 'loadmodule "presence_mwi.so"')
    presence = server.modules.get("presence")
    event = presence.contains_event("message-summary")
    assert event is not None and event.content_type == "application/simple-message-summary"
    assert presence.get_event_list() == "message-summary"


def test_allow_events_order_with_every_package(tmp_path):
    server = load(tmp_path, 'loadmodule "presence_xml.so"\nloadmodule "presence_mwi.so"\n'
                            'loadmodule "presence_dialoginfo.so"')
    assert server.modules.get("presence").get_event_list() == \
        "dialog, message-summary, dialog;sla, presence.winfo, presence"


def test_no_parameters(tmp_path):
    with pytest.raises(Exception) as info:
        load(tmp_path, 'loadmodule "presence_mwi.so"\nmodparam("presence_mwi", "whatever", 1)')
    assert "whatever" in str(info.value)
