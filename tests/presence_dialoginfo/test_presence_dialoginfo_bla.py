"""BLA (dialog;sla): presentity computation, remote-target fixing, the event package, the module glue."""

import pytest
from lxml import etree

from routescript.core.server import Server
from routescript.modules.presence.events import BodyError
from routescript.modules.presence_dialoginfo import (NS_DIALOG_INFO, bla_event, bla_presentity,
                                                     bla_presentity_from_value, fix_remote_target)
from routescript.sip import parse_message

NS = {"d": NS_DIALOG_INFO}


def subscribe(contact="<sip:201@10.0.0.7:5062;transport=udp>", frm="<sip:alice@Example.COM>;tag=a1"):
    lines = ["SUBSCRIBE sip:201@example.com SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bKx",
             "Max-Forwards: 70", f"From: {frm}", "To: <sip:201@example.com>", "Call-ID: bla-1",
             "CSeq: 1 SUBSCRIBE", "Event: dialog;sla"]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    return parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())


# --- presentity ------------------------------------------------------------------------------------------

def test_presentity_is_contact_user_at_from_domain():
    assert bla_presentity(subscribe()) == "sip:201@example.com"


@pytest.mark.parametrize("msg", [
    subscribe(contact=None),
    subscribe(contact="<sip:10.0.0.7:5062>"),   # no user
    subscribe(contact="*"),
])
def test_presentity_without_a_usable_contact_is_400(msg):
    with pytest.raises(BodyError) as info:
        bla_presentity(msg)
    assert info.value.status == 400


@pytest.mark.parametrize("value, expected", [
    ("sip:alice@example.com", "sip:alice@example.com"),
    ("sip:alice@example.com:5080;transport=tcp", "sip:alice@example.com"),    # port and params dropped
    ("sips:bob@Pbx.Example.com", "sip:bob@pbx.example.com"),
    ("  sip:carol@10.1.2.3:5060  ", "sip:carol@10.1.2.3"),
])
def test_presentity_from_pvar_value(value, expected):
    assert bla_presentity_from_value(value) == expected
    assert bla_presentity(subscribe(contact=None), value, use_spec=True) == expected


@pytest.mark.parametrize("value", [None, "", "   ", "not a uri", "<sip:alice@example.com>", "tel:+123456",
                                   "sip:", 42])
def test_presentity_from_bad_pvar_value_is_400(value):
    with pytest.raises(BodyError) as info:
        bla_presentity_from_value(value)
    assert (info.value.status, info.value.reason) == (400, "Bad request")


# --- remote target ---------------------------------------------------------------------------------------

def bla_doc(identity, target, *, params=""):
    ident = f"<identity>{identity}</identity>" if identity else ""
    return (f'<dialog-info xmlns="{NS_DIALOG_INFO}" version="3" state="full" entity="sip:201@example.com">'
            f'<dialog id="x1" direction="recipient"><state>confirmed</state>'
            '<local><identity>sip:201@example.com</identity><target uri="sip:201@10.0.0.7:5062"/></local>'
            f'<remote>{ident}<target uri="{target}">{params}</target></remote>'
            '</dialog></dialog-info>').encode()


def targets(body):
    root = etree.fromstring(body)
    return (root.find("d:dialog/d:remote/d:target", NS).get("uri"),
            root.find("d:dialog/d:local/d:target", NS).get("uri"))


@pytest.mark.parametrize("identity, target, pres_uri, expected", [
    ("sip:bob@example.net", "sip:bob@192.0.2.9:5060", "sip:201@example.com", "sip:bob@example.net"),
    (None, "sip:bob@192.0.2.9:5060;transport=udp", "sip:201@example.com", "sip:bob@example.com"),
    ("sip:bob@198.51.100.1", "sip:bob@192.0.2.9", "sip:201@example.com", "sip:bob@example.com"),
    (None, "sip:bob@[2001:db8::1]:5060", "sip:201@example.com", "sip:bob@example.com"),
    (None, "sip:192.0.2.9", "sip:201@example.com", "sip:example.com"),
    ("sip:bob@example.net", "sip:bob@pbx.example.net", "sip:201@example.com", "sip:bob@pbx.example.net"),
    (None, "sip:bob@192.0.2.9:5060", "sip:201@10.0.0.1", "sip:bob@192.0.2.9:5060"),  # nothing better
    (None, "not-a-uri", "sip:201@example.com", "not-a-uri"),
])
def test_fix_remote_target(identity, target, pres_uri, expected):
    remote, local = targets(fix_remote_target(bla_doc(identity, target), pres_uri))
    assert remote == expected
    assert local == "sip:201@10.0.0.7:5062"  # only the remote side is fixed


def test_fix_keeps_target_params():
    rendering = '<param pname="+sip.rendering" pval="no"/>'
    body = fix_remote_target(bla_doc(None, "sip:bob@192.0.2.9", params=rendering), "sip:201@example.com")
    assert etree.fromstring(body).find("d:dialog/d:remote/d:target/d:param", NS).get("pval") == "no"


def test_fix_refuses_a_non_dialog_info_body():
    with pytest.raises(BodyError):
        fix_remote_target(b"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>", "sip:a@b")


# --- the dialog;sla package ------------------------------------------------------------------------------

def test_bla_event_fixes_targets_in_the_shared_body():
    event = bla_event()
    assert (event.name, event.content_type, event.code) == ("dialog;sla", "application/dialog-info+xml", 7)
    assert event.build_empty_pres_info is None and not event.mandatory_body  # nothing published: no body
    body = event.agg_nbody("sip:201@example.com", [bla_doc(None, "sip:bob@192.0.2.9:5060")], None)
    assert targets(body)[0] == "sip:bob@example.com"
    assert etree.fromstring(body).get("entity") == "sip:201@example.com"
    raw = bla_event(fix_remote_target=False).agg_nbody("sip:201@example.com",
                                                       [bla_doc(None, "sip:bob@192.0.2.9:5060")], None)
    assert targets(raw)[0] == "sip:bob@192.0.2.9:5060"
    with pytest.raises(BodyError):
        event.evs_publ_handl(b"<<<")


# --- module glue -----------------------------------------------------------------------------------------

def load(tmp_path, text):
    path = tmp_path / "d.cfg"
    path.write_text('socket=udp:127.0.0.1:5060\nloadmodule "presence.so"\n' + text + "\nroute { exit; }\n")
    server = Server()
    server.load(str(path))
    return server


def test_module_registers_dialog_and_bla_when_presence_xml_is_absent(tmp_path):
    server = load(tmp_path, 'loadmodule "presence_dialoginfo.so"\n'
                            'modparam("presence_dialoginfo", "force_single_dialog", 1)')
    presence = server.modules.get("presence")
    assert presence.get_event_list() == "dialog, dialog;sla"
    dialog = presence.contains_event("dialog")
    body = dialog.agg_nbody("sip:a@b", [bla_doc(None, "sip:x@1.2.3.4").replace(b'id="x1"', b'id="x2"'),
                                        bla_doc(None, "sip:x@1.2.3.4")], None)
    assert len(etree.fromstring(body).findall("d:dialog", NS)) == 1  # force_single_dialog took effect


def test_force_single_dialog_must_be_a_flag(tmp_path):
    with pytest.raises(Exception) as info:
        load(tmp_path, 'loadmodule "presence_dialoginfo.so"\n'
                       'modparam("presence_dialoginfo", "force_single_dialog", 5)')
    assert "force_single_dialog" in str(info.value)
