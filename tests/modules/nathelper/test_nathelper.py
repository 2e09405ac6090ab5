"""nathelper over real scripts and parsed requests (routescript.testing.route_run): the Contact rewrites,
the received URI, each nat_uac_test flag, and what is refused at load."""

from __future__ import annotations

from pathlib import Path

import pytest
from routescript.testing.route_run import TCP_SOCK, UDP_SOCK, load, request, run, source

from routescript.core.module import ConfigError
from routescript.core.server import LoadError, Server
from routescript.sip import SocketInfo, Source

NH = 'loadmodule "nathelper.so"\n'
AVP = 'modparam("nathelper", "received_avp", "$avp(rcv)")\n'
NATED = source(UDP_SOCK, "203.0.113.7", 40001)     # the NAT's public address
WS_SOCK = SocketInfo("ws", "127.0.0.1", 8080)


def nh(tmp_path: Path, body: str, *, params: str = "", name: str = "nh.cfg") -> Server:
    return load(tmp_path, NH + params + body, name=name)


def contact_request(contact: str, **kw: str) -> object:
    return request(extra=f"Contact: {contact}\r\n", **kw)


# --- fix_nated_contact -------------------------------------------------------------------------------

async def test_fix_nated_contact_writes_the_source_address(tmp_path: Path) -> None:
    server = nh(tmp_path, "route { fix_nated_contact(); }")
    msg = contact_request('"Al" <sip:alice@10.0.0.5:5062;transport=udp;maddr=10.9.9.9>;expires=60, '
                          "<tel:+4930123>")
    ctx = await run(server, msg, NATED)   # type: ignore[arg-type]
    assert ctx.retcode == 1
    assert ctx.msg is not None
    assert ctx.msg.header_all("Contact") == ['"Al" <sip:alice@203.0.113.7:40001;transport=udp>;expires=60',
                                             "<tel:+4930123>"]


async def test_fix_nated_contact_of_a_websocket_page(tmp_path: Path) -> None:
    server = nh(tmp_path, 'route { fix_nated_contact(";nat=yes"); }')
    page = Source("ws", WS_SOCK, "127.0.0.1", 53124, 3)
    ctx = await run(server, contact_request("<sip:k3h2@df7jal23ls0d.invalid;transport=ws>;+sip.ice"),  # type: ignore[arg-type]
                    page)
    assert ctx.msg is not None
    assert ctx.msg.header("Contact") == "<sip:k3h2@127.0.0.1:53124;nat=yes;transport=ws>;+sip.ice"
    assert str(ctx.msg.contacts[0].uri) == "sip:k3h2@127.0.0.1:53124;nat=yes;transport=ws"


async def test_fix_nated_contact_ipv6_source_and_no_contact(tmp_path: Path) -> None:
    server = nh(tmp_path, "route { fix_nated_contact(); }")
    ctx = await run(server, contact_request("<sip:a@[fd00::5]:5060>"),  # type: ignore[arg-type]
                    Source("udp", UDP_SOCK, "2001:db8::7", 4000))
    assert ctx.msg is not None and ctx.msg.header("Contact") == "<sip:a@[2001:db8::7]:4000>"
    ctx = await run(server, request(), NATED)
    assert ctx.retcode == 1 and ctx.msg is not None and not ctx.msg.has_header("Contact")


async def test_fix_nated_contact_twice_is_refused_as_opensips(tmp_path: Path) -> None:
    server = nh(tmp_path, "route { fix_nated_contact(); fix_nated_contact(); }")
    ctx = await run(server, contact_request("<sip:a@10.0.0.5>"), NATED)  # type: ignore[arg-type]
    assert ctx.retcode == -1
    assert ctx.msg is not None and ctx.msg.header("Contact") == "<sip:a@203.0.113.7:40001>"


async def test_fix_nated_contact_bad_contact_is_false(tmp_path: Path) -> None:
    server = nh(tmp_path, "route { fix_nated_contact(); }")
    ctx = await run(server, contact_request("<sip:a@10.0.0.5"), NATED)  # type: ignore[arg-type]
    assert ctx.retcode == -1
    assert ctx.msg is not None and ctx.msg.header("Contact") == "<sip:a@10.0.0.5"


def test_uri_params_without_semicolon_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="start with ';'"):
        nh(tmp_path, 'route { fix_nated_contact("nat=yes"); }')


# --- fix_nated_register, add_rcv_param -----------------------------------------------------------------

async def test_fix_nated_register_fills_received_avp(tmp_path: Path) -> None:
    server = nh(tmp_path, "route { fix_nated_register(); }", params=AVP)
    ctx = await run(server, request("REGISTER"), NATED)
    assert ctx.avps["rcv"] == ["sip:203.0.113.7:40001"]
    ctx = await run(server, request("REGISTER"), source(TCP_SOCK, "198.51.100.2", 1234))
    assert ctx.avps["rcv"] == ["sip:198.51.100.2:1234;transport=tcp"]


def test_fix_nated_register_without_received_avp_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="received_avp"):
        nh(tmp_path, "route { fix_nated_register(); }")


async def test_add_rcv_param_header_and_uri_forms(tmp_path: Path) -> None:
    server = nh(tmp_path, "route { add_rcv_param(); }")
    ctx = await run(server, contact_request("<sip:a@10.0.0.5>;expires=30"),  # type: ignore[arg-type]
                    Source("ws", WS_SOCK, "127.0.0.1", 5555, 1))
    assert ctx.msg is not None
    assert ctx.msg.header("Contact") == ('<sip:a@10.0.0.5>;expires=30;'
                                         'received="sip:127.0.0.1:5555;transport=ws"')
    assert ctx.msg.contacts[0].param("received") == "sip:127.0.0.1:5555;transport=ws"
    server = nh(tmp_path, "route { add_rcv_param(1); }", name="uri.cfg")
    ctx = await run(server, contact_request("<sip:a@10.0.0.5>"), source(TCP_SOCK, "198.51.100.2", 1234))  # type: ignore[arg-type]
    assert ctx.msg is not None
    uri = ctx.msg.contacts[0].uri
    assert uri is not None and uri.param("received") == "sip:198.51.100.2:1234%3Btransport%3Dtcp"
    ctx = await run(server, request(), NATED)
    assert ctx.retcode == -1   # no Contact to add it to


# --- nat_uac_test -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "contact", "via", "src_port", "expected"), [
    ("private-contact", "<sip:a@192.168.1.5:5060>", "SIP/2.0/UDP 203.0.113.7:40001", 40001, 1),
    ("private-contact", "<sip:a@198.51.100.5:5060>", "SIP/2.0/UDP 203.0.113.7:40001", 40001, -1),
    ("private-contact", "<sip:a@100.64.3.3>", "SIP/2.0/UDP 203.0.113.7:40001", 40001, 1),       # RFC 6598
    ("private-contact", "<sip:a@192.0.0.2>", "SIP/2.0/UDP 203.0.113.7:40001", 40001, -1),
    ("private-contact,carrier-grade-nat", "<sip:a@192.0.0.2>", "SIP/2.0/UDP 203.0.113.7", 40001, 1),
    ("diff-ip-src-via", "<sip:a@x>", "SIP/2.0/UDP 10.0.0.5:40001", 40001, 1),
    ("diff-ip-src-via", "<sip:a@x>", "SIP/2.0/UDP 203.0.113.7:40001", 40001, -1),
    ("diff-ip-src-via", "<sip:a@x>", "SIP/2.0/UDP 203.0.113.7:40001;received=1.2.3.4", 40001, 1),
    ("private-via", "<sip:a@x>", "SIP/2.0/UDP 172.20.0.1:40001", 40001, 1),
    ("private-via", "<sip:a@x>", "SIP/2.0/UDP 172.32.0.1:40001", 40001, -1),
    ("diff-port-src-via", "<sip:a@x>", "SIP/2.0/UDP 203.0.113.7", 40001, 1),                 # 5060 vs 40001
    ("diff-port-src-via", "<sip:a@x>", "SIP/2.0/UDP 203.0.113.7:40001", 40001, -1),
    ("diff-ip-src-contact", "<sip:a@df7jal23ls0d.invalid;transport=ws>", "SIP/2.0/UDP h", 40001, 1),
    ("diff-ip-src-contact", "<sip:a@203.0.113.7:9>", "SIP/2.0/UDP h", 40001, -1),
    ("diff-port-src-contact", "<sip:a@203.0.113.7>", "SIP/2.0/UDP h", 40001, 1),
    ("diff-port-src-contact", "<sip:a@203.0.113.7:40001>", "SIP/2.0/UDP h", 40001, -1),
    ("private-via,diff-port-src-contact", "<sip:a@203.0.113.7:40001>", "SIP/2.0/UDP 10.1.1.1", 40001, 1),
])
async def test_nat_uac_test_flags(tmp_path: Path, flags: str, contact: str, via: str, src_port: int,
                                  expected: int) -> None:
    server = nh(tmp_path, f'route {{ nat_uac_test("{flags}"); }}')
    msg = contact_request(contact, via=f"{via};branch=z9hG4bKn1")
    ctx = await run(server, msg, source(UDP_SOCK, "203.0.113.7", src_port))  # type: ignore[arg-type]
    assert ctx.retcode == expected


SDP = "v=0\r\no=- 1 1 IN IP4 {o}\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


@pytest.mark.parametrize(("c_addr", "expected"), [("10.0.0.9", 1), ("198.51.100.9", -1), ("0.0.0.0", -1)])
async def test_nat_uac_test_private_sdp(tmp_path: Path, c_addr: str, expected: int) -> None:
    server = nh(tmp_path, 'route { nat_uac_test("private-sdp"); }')
    body = SDP.format(o="198.51.100.1", c=c_addr)
    msg = request()
    msg.set_body(body.encode(), "application/sdp")
    ctx = await run(server, msg, NATED)
    assert ctx.retcode == expected


async def test_nat_uac_test_private_sdp_in_a_multipart_body(tmp_path: Path) -> None:
    server = nh(tmp_path, 'route { nat_uac_test("private-sdp"); }')
    body = ("--b1\r\nContent-Type: application/sdp\r\n\r\n" + SDP.format(o="1.2.3.4", c="192.168.0.4")
            + "\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b1--\r\n")
    msg = request()
    msg.set_body(body.encode(), "multipart/mixed;boundary=b1")
    ctx = await run(server, msg, NATED)
    assert ctx.retcode == 1


def test_nat_uac_test_numeric_flags_refused_with_their_names(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match='"private-contact,diff-ip-src-via,diff-port-src-via"'):
        nh(tmp_path, 'route { nat_uac_test("19"); }')
    with pytest.raises(LoadError, match='unknown flag "private-cntact"'):
        nh(tmp_path, 'route { nat_uac_test("private-cntact"); }', name="typo.cfg")


# --- parameters ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("param", ['modparam("nathelper", "natping_interval", 10)',
                                   'modparam("nathelper", "sipping_from", "sip:pinger@example.com")',
                                   'modparam("nathelper", "nortpproxy_str", "a=x:y")'])
def test_pinging_and_sdp_parameters_refused(tmp_path: Path, param: str) -> None:
    with pytest.raises(LoadError, match=r"not supported yet: (NAT pinging|fix_nated_sdp)"):
        nh(tmp_path, "route { exit; }", params=param + "\n")


def test_received_avp_must_be_an_avp(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"must name an AVP"):
        nh(tmp_path, "route { exit; }", params='modparam("nathelper", "received_avp", "$var(x)")\n')


async def test_received_avp_must_match_the_registrars(tmp_path: Path) -> None:
    server = nh(tmp_path, 'loadmodule "usrloc.so"\nloadmodule "registrar.so"\n'
                'modparam("registrar", "received_avp", "$avp(other)")\nroute { exit; }', params=AVP)
    module = server.modules.get("nathelper")
    assert module is not None
    with pytest.raises(ConfigError, match="same AVP"):
        await module.start()
