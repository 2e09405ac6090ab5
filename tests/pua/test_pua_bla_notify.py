"""What bla_handle_notify reads from a NOTIFY (modules/pua_bla/notify.py): Subscription-State to an
Expires, OpenSIPS's body check, the missing-header refusals; and the module's load-time checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.core.server import LoadError, Server
from routescript.modules.pua_bla.notify import (
    DEFAULT_EXPIRES,
    BadNotify,
    check_dialog_info,
    read_bla_notify,
    subscription_expires,
)
from routescript.sip import build_request

NS = "urn:ietf:params:xml:ns:dialog-info"
BODY = (f'<dialog-info xmlns="{NS}" version="0" state="full" entity="sip:l@x">'
        '<dialog id="1"/></dialog-info>').encode()


@pytest.mark.parametrize(("value", "expires"), [
    ("active;expires=600", 600), ("Active ; expires = 30", 30), ("pending", DEFAULT_EXPIRES),
    ("active;reason=x", DEFAULT_EXPIRES), ("terminated;reason=noresource", 0), ("TERMINATED", 0)])
def test_subscription_state(value: str, expires: int) -> None:
    assert subscription_expires(value) == expires


@pytest.mark.parametrize("value", [None, "", "bogus", "active;expires=x", "active;expires=-1"])
def test_bad_subscription_state(value: str | None) -> None:
    with pytest.raises(BadNotify):
        subscription_expires(value)


@pytest.mark.parametrize("body", [
    b"<dialog-info", b"<presence/>", f'<dialog-info xmlns="{NS}"><note/></dialog-info>'.encode(),
    b"<dialog-info/><dialog-info/>", b"x" * 70000])
def test_bad_bodies(body: bytes) -> None:
    with pytest.raises(BadNotify):
        check_dialog_info(body)


def test_good_bodies() -> None:
    check_dialog_info(BODY)
    check_dialog_info(f'<dialog-info xmlns="{NS}"/>'.encode())       # blank: valid (OpenSIPS)
    check_dialog_info(f'<dialog-info xmlns="{NS}"><!-- c --><dialog id="a"/></dialog-info>'.encode())


def notify(**drop: bool) -> object:
    headers = [("Via", "SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKx"),
               ("From", "<sip:l@x>" + ("" if drop.get("from_tag") else ";tag=ph")),
               ("To", "<sip:l@x>" + ("" if drop.get("to_tag") else ";tag=us")),
               ("Call-ID", "c1"), ("CSeq", "1 NOTIFY"), ("Event", "dialog;sla"),
               ("Subscription-State", "active;expires=60")]
    if not drop.get("contact"):
        headers.append(("Contact", "<sip:l@10.0.0.7:5062>"))
    return build_request("NOTIFY", "sip:bla@192.0.2.1", headers, BODY,
                         content_type="application/dialog-info+xml")


def test_read_notify() -> None:
    facts = read_bla_notify(notify())
    assert (facts.call_id, facts.our_tag, facts.their_tag, facts.line_uri, facts.contact, facts.expires) == \
        ("c1", "us", "ph", "sip:l@x", "sip:l@10.0.0.7:5062", 60)
    assert facts.body == BODY


@pytest.mark.parametrize("missing", ["to_tag", "from_tag", "contact"])
def test_read_notify_refuses(missing: str) -> None:
    with pytest.raises(BadNotify):
        read_bla_notify(notify(**{missing: True}))


CFG = """
socket = udp:127.0.0.1:5060
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "pua.so"
loadmodule "pua_bla.so"
PARAMS
route { exit; }
"""


@pytest.mark.parametrize(("params", "needle"), [
    ('modparam("pua_bla", "header_name", "Sender")', "server_address"),
    ('modparam("pua_bla", "server_address", "sip:bla@127.0.0.1")', "header_name"),
    ('modparam("pua_bla", "server_address", "not a uri")\nmodparam("pua_bla", "header_name", "Sender")',
     "server_address"),
    ('modparam("pua_bla", "server_address", "sip:bla@127.0.0.1")\nmodparam("pua_bla", "header_name", "A: b")',
     "header_name")])
def test_load_time_refusals(tmp_path: Path, params: str, needle: str) -> None:
    cfg = tmp_path / "bla.cfg"
    cfg.write_text(CFG.replace("PARAMS", params))
    with pytest.raises(LoadError, match=needle):
        Server().load(str(cfg))
