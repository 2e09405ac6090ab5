"""Core pseudo-variables on real parsed messages: requests, replies, compact headers, missing and
malformed headers."""

from __future__ import annotations

import time

import pytest

from routescript.script.context import STARTUP_ROUTE, MsgContext
from routescript.script.pvars import MAX_AVP_VALUES, core_pvars
from routescript.script.registry import PVarRef, PVarSpec, Registry
from routescript.sip import ParseError, parse_message

try:
    from routescript.transport import SocketInfo, Source
except ImportError:  # the package may not re-export them (yet)
    from routescript.transport.address import SocketInfo, Source

NOW = 1_700_000_000.25  # 2023-11-14T22:13:20.25Z
PV: dict[str, PVarSpec] = {s.name: s for s in core_pvars(clock=lambda: NOW)}


def msg(text: str):
    return parse_message(text.replace("\n", "\r\n").encode())


SUBSCRIBE = msg("""\
SUBSCRIBE sip:bob@example.com:5070;transport=tcp SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds
Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK776asdhdt, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKx
Max-Forwards: 70
From: "Alice A" <sip:alice@example.com>;tag=1928301774
To: <sip:bob@example.com>
Call-ID: a84b4c76e66710@pc33.example.com
CSeq: 314159 SUBSCRIBE
Contact: "Alice" <sip:alice@10.0.0.1:5060;transport=udp>;expires=3600;q=0.5, <sip:alice@10.0.0.9>
Event: presence
Expires: 3600
User-Agent: TestUA/1.0
P-Asserted-Identity: "Alice" <sip:alice@pai.example.com>
X-Custom: one
x-custom: two
Content-Type: application/pidf+xml
Content-Length: 5

hello""")

# Compact forms everywhere (RFC 3261 7.3.3), addr-spec From/To, tel: To URI, no body.
PUBLISH_COMPACT = msg("""\
PUBLISH sip:carol@example.com SIP/2.0
v: SIP/2.0/TCP 10.0.0.3;branch=z9hG4bKabc
f: sip:carol@example.com;tag=xyz
t: tel:+4930123
i: callid-2
CSeq: 1 PUBLISH
m: <sip:carol@10.0.0.3>
o: presence
c: text/plain
l: 0

""")

REPLY = msg("""\
SIP/2.0 202 Accepted
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds
From: <sip:alice@example.com>;tag=1928301774
To: Bob <sip:bob@example.com>;tag=bobtag
Call-ID: a84b4c76e66710@pc33.example.com
CSeq: 314159 SUBSCRIBE
Content-Length: 0

""")

SOURCE = Source("udp", SocketInfo("udp", "127.0.0.1", 5060), "10.0.0.1", 5062)


def ctx_for(message=None, source=SOURCE, **kw) -> MsgContext:
    return MsgContext(msg=message, source=source, **kw)


def fresh(message) -> MsgContext:
    """A context over its own copy of the message (setters change it)."""
    return ctx_for(parse_message(message.to_bytes()))


def get(ctx, name, key=None, index=None):
    return PV[name].getter(ctx, key, index)


def put(ctx, name, value, key=None, index=None):
    PV[name].setter(ctx, key, index, value)


# --- the table -------------------------------------------------------------------------------------------

def test_registry_accepts_every_spec():
    reg = Registry()
    for spec in core_pvars():
        reg.add_pvar(spec)
    for name in ("var", "avp", "hdr", "ru", "rU", "rd", "rp", "ou", "du", "fu", "fU", "fd", "fn", "ft",
                 "tu", "tU", "td", "tn", "tt", "ci", "cs", "rm", "rs", "rr", "si", "sp", "Ri", "Rp", "pr",
                 "proto", "ct", "cT", "ua", "rb", "ml", "ai", "time", "Ts", "Tf", "T_reply_code",
                 "retcode", "rc", "param", "err.class", "err.level", "err.info", "err.rcode",
                 "err.rreason"):
        assert name in reg.pvars, name


def test_only_opensips_writable_ones_have_setters():
    writable = {name for name, spec in PV.items() if spec.setter is not None}
    assert writable == {"var", "avp", "ru", "ruri", "rU", "rd", "rp", "du"}


def test_key_kinds_and_checks():
    assert PV["var"].key == "required" and PV["hdr"].key == "required"
    assert PV["ru"].key == "none"
    PV["hdr"].check_key("P-Asserted-Identity")
    PV["hdr"].check_key("m")
    for bad in ("", "Bad Name", "X:y"):
        with pytest.raises(ValueError):
            PV["hdr"].check_key(bad)
    PV["var"].check_key("my_var")
    for bad in ("", "a b", "x)"):
        with pytest.raises(ValueError):
            PV["var"].check_key(bad)
    PV["ct.fields"].check_key("uri")
    with pytest.raises(ValueError):
        PV["ct.fields"].check_key("color")
    PV["time"].check_key("%Y-%m-%d")
    with pytest.raises(ValueError):
        PV["time"].check_key("")


@pytest.mark.parametrize("name", sorted(PV))
def test_every_getter_is_null_without_a_message(name):
    """startup/timer/event routes run without a message: message pvars read NULL, never crash."""
    ctx = MsgContext(route_type=STARTUP_ROUTE)
    key = {"var": "x", "avp": "x", "hdr": "From", "hdrcnt": "From", "ct.fields": "uri", "param": "p",
           "time": "%Y", "env": "RS_TEST_UNSET"}.get(name)
    value = get(ctx, name, key)
    if name in ("retcode", "rc", "?"):
        assert value == 0
    elif name in ("Ts", "Tsm", "Tf", "time", "pp"):
        assert value is not None
    else:
        assert value is None, name


@pytest.mark.parametrize("message", [SUBSCRIBE, PUBLISH_COMPACT, REPLY], ids=["request", "compact", "reply"])
@pytest.mark.parametrize("name", sorted(PV))
def test_every_getter_returns_a_script_value(message, name):
    key = {"var": "x", "avp": "x", "hdr": "Via", "hdrcnt": "Via", "ct.fields": "uri", "param": "p",
           "time": "%H", "env": "PATH"}.get(name)
    value = get(ctx_for(message), name, key)
    assert value is None or type(value) in (str, int), (name, value)


# --- $var --------------------------------------------------------------------------------------------------

def test_var_read_write_null():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "var", "x") is None
    put(ctx, "var", "abc", "x")
    assert get(ctx, "var", "x") == "abc"
    put(ctx, "var", 5, "x")
    assert get(ctx, "var", "x") == 5
    put(ctx, "var", True, "flag")
    assert get(ctx, "var", "flag") == 1
    put(ctx, "var", None, "x")
    assert get(ctx, "var", "x") is None
    assert "x" not in ctx.vars
    put(ctx, "var", None, "never-set")  # deleting an unset variable is fine
    with pytest.raises(ValueError):
        put(ctx, "var", [1, 2], "x")


def test_var_is_per_context():
    a, b = ctx_for(SUBSCRIBE), ctx_for(SUBSCRIBE)
    put(a, "var", "one", "x")
    assert get(b, "var", "x") is None


def test_pvar_ref_round_trip():
    ref = PVarRef(PV["var"], "x", None, "$var(x)")
    ctx = ctx_for(SUBSCRIBE)
    ref.set(ctx, "v")
    assert ref.get(ctx) == "v"
    with pytest.raises(TypeError):
        PVarRef(PV["fu"], None, None, "$fu").set(ctx, "sip:x@y")


# --- $avp --------------------------------------------------------------------------------------------------

def test_avp_is_a_stack():
    ctx = ctx_for(SUBSCRIBE)
    for v in ("one", "two", "three"):
        put(ctx, "avp", v, "arr")
    assert get(ctx, "avp", "arr") == "three"  # newest first
    assert get(ctx, "avp", "arr", 0) == "three"
    assert get(ctx, "avp", "arr", 2) == "one"
    assert get(ctx, "avp", "arr", -1) == "one"
    assert get(ctx, "avp", "arr", 3) is None
    assert get(ctx, "avp", "arr", -4) is None
    assert get(ctx, "avp", "arr", "*") == "three, two, one"
    assert get(ctx, "avp", "other") is None
    assert get(ctx, "avp", "other", "*") is None


def test_avp_null_removes_newest_index_or_all():
    ctx = ctx_for(SUBSCRIBE)
    for v in (1, 2, 3, 4):
        put(ctx, "avp", v, "a")
    put(ctx, "avp", None, "a")  # $avp(a) = NULL: the newest only (OpenSIPS 3.x docs)
    assert get(ctx, "avp", "a", "*") == "3, 2, 1"
    put(ctx, "avp", None, "a", 1)  # $(avp(a)[1]) = NULL
    assert get(ctx, "avp", "a", "*") == "3, 1"
    with pytest.raises(ValueError):
        put(ctx, "avp", None, "a", -1)
    put(ctx, "avp", None, "a", "*")  # $(avp(a)[*]) = NULL, also what `$avp(a) := NULL` compiles to
    assert get(ctx, "avp", "a") is None
    assert "a" not in ctx.avps
    put(ctx, "avp", None, "a")  # nothing left: no error


def test_avp_overwrite_replace_all_append():
    ctx = ctx_for(SUBSCRIBE)
    put(ctx, "avp", "x", "a")
    put(ctx, "avp", "y", "a")
    put(ctx, "avp", "zero", "a", 0)  # overwrite index 0
    assert get(ctx, "avp", "a", "*") == "zero, x"
    put(ctx, "avp", "last", "a", "append")
    assert get(ctx, "avp", "a", -1) == "last"
    put(ctx, "avp", "only", "a", "*")  # `$avp(a) := "only"`
    assert get(ctx, "avp", "a", "*") == "only"
    with pytest.raises(ValueError):
        put(ctx, "avp", "v", "a", 5)
    with pytest.raises(ValueError):
        put(ctx, "avp", "v", "fresh", 0)
    assert "fresh" not in ctx.avps


def test_avp_is_bounded():
    ctx = ctx_for(SUBSCRIBE)
    ctx.avps["big"] = list(range(MAX_AVP_VALUES))
    with pytest.raises(ValueError):
        put(ctx, "avp", 1, "big")


# --- Request-URI ------------------------------------------------------------------------------------------

def test_ruri_parts_on_request():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "ru") == "sip:bob@example.com:5070;transport=tcp"
    assert get(ctx, "rU") == "bob"
    assert get(ctx, "rd") == "example.com"
    assert get(ctx, "rp") == 5070
    assert get(ctx, "rP") == "tcp"
    assert get(ctx, "rz") == "sip"
    assert get(ctx, "ou") == get(ctx, "ru")
    assert get(ctx, "oU") == "bob"


def test_ruri_defaults():
    ctx = ctx_for(PUBLISH_COMPACT)
    assert get(ctx, "rp") == 5060
    assert get(ctx, "rP") == "UDP"
    ctx2 = fresh(PUBLISH_COMPACT)
    put(ctx2, "ru", "sips:carol@example.com")
    assert get(ctx2, "rp") == 5061


def test_ruri_is_null_in_replies():
    ctx = ctx_for(REPLY)
    for name in ("ru", "rU", "rd", "rp", "rP", "ou", "oU"):
        assert get(ctx, name) is None
    with pytest.raises(ValueError):
        put(ctx, "ru", "sip:x@y")


def test_ruri_setters_change_the_message_and_keep_the_original():
    ctx = fresh(SUBSCRIBE)
    put(ctx, "rU", "carol")
    assert get(ctx, "ru") == "sip:carol@example.com:5070;transport=tcp"
    put(ctx, "rd", "other.net")
    put(ctx, "rp", 5080)
    assert get(ctx, "ru") == "sip:carol@other.net:5080;transport=tcp"
    put(ctx, "rp", None)
    assert get(ctx, "rp") == 5060
    put(ctx, "rU", None)
    assert get(ctx, "ru") == "sip:other.net;transport=tcp"
    assert get(ctx, "rU") is None
    put(ctx, "ru", "sip:dave@example.org")
    assert ctx.msg.to_bytes().startswith(b"SUBSCRIBE sip:dave@example.org SIP/2.0\r\n")
    # $ou and friends still give the R-URI the request arrived with
    assert get(ctx, "ou") == "sip:bob@example.com:5070;transport=tcp"
    original = (get(ctx, "oU"), get(ctx, "od"), get(ctx, "op"), get(ctx, "oP"))
    assert original == ("bob", "example.com", 5070, "tcp")


def test_ruri_user_with_parameters_and_ipv6_host():
    ctx = fresh(PUBLISH_COMPACT)
    put(ctx, "rU", "+4930;npdi")
    assert get(ctx, "rU") == "+4930;npdi"
    put(ctx, "rd", "2001:db8::1")
    assert get(ctx, "ru") == "sip:+4930;npdi@[2001:db8::1]"
    assert get(ctx, "rd") == "[2001:db8::1]"
    put(ctx, "rU", 1234)
    assert get(ctx, "rU") == "1234"


@pytest.mark.parametrize("name,value", [
    ("ru", "not a uri"), ("ru", None), ("ru", ""), ("ru", "http://x"),
    ("rd", None), ("rd", ""), ("rd", "a b"), ("rU", "a@b"), ("rp", "port"), ("rp", 70000), ("rp", -1),
])
def test_ruri_setters_refuse_bad_values(name, value):
    ctx = fresh(SUBSCRIBE)
    before = ctx.msg.ruri
    with pytest.raises(ValueError):
        put(ctx, name, value)
    assert ctx.msg.ruri == before


def test_bad_ruri_raises_parse_error():
    ctx = fresh(PUBLISH_COMPACT)
    ctx.msg.ruri = "sip:bob@[bad"  # no whitespace: the start line takes it, the URI does not parse
    with pytest.raises(ParseError):
        get(ctx, "rU")
    with pytest.raises(ParseError):
        get(ctx, "rd")
    assert get(ctx, "ru") == "sip:bob@[bad"


# --- $du --------------------------------------------------------------------------------------------------

def test_dst_uri():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "du") is None and get(ctx, "dd") is None
    put(ctx, "du", "sip:proxy.example.com:5080;transport=tcp")
    assert ctx.dst_uri == "sip:proxy.example.com:5080;transport=tcp"
    assert (get(ctx, "dd"), get(ctx, "dp"), get(ctx, "dP")) == ("proxy.example.com", 5080, "tcp")
    put(ctx, "du", None)
    assert get(ctx, "du") is None
    with pytest.raises(ValueError):
        put(ctx, "du", "garbage")
    ctx.dst_uri = "garbage set by hand"
    assert get(ctx, "dd") is None


# --- From / To --------------------------------------------------------------------------------------------

def test_from_to_on_request():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "fu") == "sip:alice@example.com"
    assert get(ctx, "fU") == "alice"
    assert get(ctx, "fd") == "example.com"
    assert get(ctx, "fn") == '"Alice A"'  # as written, as OpenSIPS prints it
    assert get(ctx, "ft") == "1928301774"
    assert get(ctx, "tu") == "sip:bob@example.com"
    assert get(ctx, "tU") == "bob"
    assert get(ctx, "td") == "example.com"
    assert get(ctx, "tn") is None
    assert get(ctx, "tt") is None  # no To tag yet


def test_from_to_compact_and_tel():
    ctx = ctx_for(PUBLISH_COMPACT)
    assert get(ctx, "fu") == "sip:carol@example.com"
    assert get(ctx, "ft") == "xyz"
    assert get(ctx, "fn") is None
    assert get(ctx, "tu") == "tel:+4930123"
    assert get(ctx, "tU") == "+4930123"
    assert get(ctx, "td") is None


def test_from_to_on_reply():
    ctx = ctx_for(REPLY)
    assert get(ctx, "tt") == "bobtag"
    assert get(ctx, "tn") == "Bob"
    assert get(ctx, "ft") == "1928301774"


def test_malformed_from_raises_parse_error():
    bad = msg("""\
SUBSCRIBE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1
From: "Alice <sip:alice@example.com;tag=1
To: <sip:bob@example.com>
Call-ID: x
CSeq: 1 SUBSCRIBE
Content-Length: 0

""")
    with pytest.raises(ParseError):
        get(ctx_for(bad), "fU")


# --- headers ------------------------------------------------------------------------------------------------

def test_hdr_indexes_header_lines():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "hdr", "Via") == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds"
    assert get(ctx, "hdr", "Via", 1) == ("SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK776asdhdt, "
                                         "SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKx")
    assert get(ctx, "hdr", "Via", -1) == get(ctx, "hdr", "Via", 1)
    assert get(ctx, "hdr", "Via", 2) is None
    assert get(ctx, "hdr", "X-Custom") == "one"
    assert get(ctx, "hdr", "x-CUSTOM", "*") == "one, two"
    assert get(ctx, "hdr", "X-Custom", -1) == "two"
    assert get(ctx, "hdr", "Event") == "presence"
    assert get(ctx, "hdr", "o") == "presence"  # compact name asked, long form present
    assert get(ctx, "hdr", "X-Missing") is None
    assert get(ctx, "hdr", "X-Missing", "*") is None
    assert get(ctx, "hdrcnt", "Via") == 2
    assert get(ctx, "hdrcnt", "X-Custom") == 2
    assert get(ctx, "hdrcnt", "X-Missing") == 0


def test_hdr_on_compact_message():
    ctx = ctx_for(PUBLISH_COMPACT)
    assert get(ctx, "hdr", "Event") == "presence"
    assert get(ctx, "hdr", "Contact") == "<sip:carol@10.0.0.3>"
    assert get(ctx, "hdr", "Content-Type") == "text/plain"
    assert get(ctx, "cT") == "text/plain"
    assert get(ctx, "cl") == 0
    assert get(ctx, "ci") == "callid-2"


def test_contact_pvars():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "ct") == '"Alice" <sip:alice@10.0.0.1:5060;transport=udp>;expires=3600;q=0.5'
    assert get(ctx, "ct", None, 1) == "<sip:alice@10.0.0.9>"
    assert get(ctx, "ct", None, -1) == "<sip:alice@10.0.0.9>"
    assert get(ctx, "ct", None, "*").count("sip:alice@") == 2
    assert get(ctx, "ct.fields", "uri") == "sip:alice@10.0.0.1:5060;transport=udp"
    assert get(ctx, "ct.fields", "name") == '"Alice"'
    assert get(ctx, "ct.fields", "expires") == "3600"
    assert get(ctx, "ct.fields", "q") == "0.5"
    assert get(ctx, "ct.fields", "params") == "expires=3600;q=0.5"
    assert get(ctx, "ct.fields", "received") is None
    assert get(ctx, "ct.fields", "uri", 1) == "sip:alice@10.0.0.9"
    assert get(ctx, "ct.fields", "expires", 1) is None
    assert get(ctx_for(REPLY), "ct") is None
    assert get(ctx_for(REPLY), "ct.fields", "uri") is None


def test_star_contact():
    star = msg("""\
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1
From: <sip:a@example.com>;tag=1
To: <sip:a@example.com>
Call-ID: r1
CSeq: 2 REGISTER
Contact: *
Expires: 0
Content-Length: 0

""")
    ctx = ctx_for(star)
    assert get(ctx, "ct") == "*"
    assert get(ctx, "ct.fields", "uri") is None


def test_malformed_contact_raises_parse_error():
    bad = msg("""\
SUBSCRIBE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1
From: <sip:a@example.com>;tag=1
To: <sip:bob@example.com>
Call-ID: x
CSeq: 1 SUBSCRIBE
Contact: <sip:alice@example.com
Content-Length: 0

""")
    ctx = ctx_for(bad)
    with pytest.raises(ParseError):
        get(ctx, "ct")
    with pytest.raises(ParseError):
        get(ctx, "ct.fields", "uri")
    assert get(ctx, "hdr", "Contact") == "<sip:alice@example.com"  # raw access still works


def test_other_header_pvars():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "ua") == "TestUA/1.0"
    assert get(ctx, "ai") == "sip:alice@pai.example.com"
    assert get(ctx, "rt") is None
    assert get(ctx, "cT") == "application/pidf+xml"
    assert get(ctx, "cl") == 5
    missing = ctx_for(REPLY)
    assert get(missing, "ua") is None
    assert get(missing, "ai") is None
    assert get(missing, "cT") is None


def test_malformed_pai_raises_parse_error():
    ctx = fresh(SUBSCRIBE)
    ctx.msg.set_header("P-Asserted-Identity", "<not a uri>")
    with pytest.raises(ParseError):
        get(ctx, "ai")


# --- message ----------------------------------------------------------------------------------------------

def test_message_pvars_on_request():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "ci") == "a84b4c76e66710@pc33.example.com"
    assert get(ctx, "cs") == 314159
    assert get(ctx, "rm") == "SUBSCRIBE"
    assert get(ctx, "rs") is None
    assert get(ctx, "rr") is None
    assert get(ctx, "rb") == "hello"
    raw = SUBSCRIBE.to_bytes()
    assert get(ctx, "ml") == len(raw)
    assert get(ctx, "mb") == raw.decode()


def test_message_pvars_on_reply():
    ctx = ctx_for(REPLY)
    assert get(ctx, "rs") == 202
    assert get(ctx, "rr") == "Accepted"
    assert get(ctx, "rm") == "SUBSCRIBE"  # the CSeq method
    assert get(ctx, "cs") == 314159
    assert get(ctx, "rb") is None  # no body


def test_body_pvar_survives_bad_utf8():
    ctx = fresh(SUBSCRIBE)
    ctx.msg.set_body(b"\xff\xfeok", "application/octet-stream")
    assert get(ctx, "rb").endswith("ok")


# --- network -----------------------------------------------------------------------------------------------

def test_network_pvars():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "si") == "10.0.0.1"
    assert get(ctx, "sp") == 5062
    assert get(ctx, "Ri") == "127.0.0.1"
    assert get(ctx, "Rp") == 5060
    assert get(ctx, "pr") == "udp"
    assert get(ctx, "proto") == "udp"
    tcp = ctx_for(PUBLISH_COMPACT, Source("tcp", SocketInfo("tcp", "::1", 5070), "::1", 40000, 7))
    assert (get(tcp, "pr"), get(tcp, "si"), get(tcp, "Rp")) == ("tcp", "::1", 5070)
    none = ctx_for(SUBSCRIBE, source=None)
    assert all(get(none, n) is None for n in ("si", "sp", "Ri", "Rp", "pr"))


# --- script state ----------------------------------------------------------------------------------------

def test_retcode_param_reply_code():
    ctx = ctx_for(SUBSCRIBE, retcode=-2, params={"pres_uri": "sip:a@b", 1: "first"}, reply_code=408)
    assert get(ctx, "retcode") == get(ctx, "rc") == get(ctx, "?") == -2
    assert get(ctx, "param", "pres_uri") == "sip:a@b"
    assert get(ctx, "param", "1") == "first"
    assert get(ctx, "param", "nope") is None
    assert get(ctx, "T_reply_code") == 408
    assert get(ctx_for(REPLY), "T_reply_code") == 202
    assert get(ctx_for(SUBSCRIBE), "T_reply_code") is None


def test_err_pvars():
    ctx = ctx_for(None, error=ParseError("Bad Event header"))
    assert get(ctx, "err.class") == 1
    assert get(ctx, "err.level") == 2
    assert "Bad Event header" in get(ctx, "err.info")
    assert get(ctx, "err.rcode") == 400
    assert get(ctx, "err.rreason") == "Bad Event header"
    big = ctx_for(None, error=ParseError("Message Too Large", 513))
    assert get(big, "err.rcode") == 513
    assert get(ctx_for(SUBSCRIBE), "err.rcode") is None


# --- time --------------------------------------------------------------------------------------------------

def test_time_pvars_read_the_injected_clock():
    ctx = ctx_for(SUBSCRIBE)
    assert get(ctx, "Ts") == 1_700_000_000
    assert get(ctx, "Tsm") == 250_000
    assert get(ctx, "Tf") == time.ctime(1_700_000_000)
    assert get(ctx, "time", "%Y") == time.strftime("%Y", time.localtime(1_700_000_000))
    assert get(ctx, "time", "%H:%M") == time.strftime("%H:%M", time.localtime(1_700_000_000))
    moving = iter([10.0, 20.5])
    clocked = {s.name: s for s in core_pvars(clock=lambda: next(moving))}
    assert clocked["Ts"].getter(ctx, None, None) == 10
    assert clocked["Ts"].getter(ctx, None, None) == 20


# --- compiled scripts over the real message: loops and chains -------------------------------------------

async def _run_script(src: str, message) -> MsgContext:  # type: ignore[no-untyped-def]
    from routescript.core.loader import build_registry
    from routescript.core.module import ModuleSet
    from routescript.script import compile_script, parse_text

    ctx = fresh(message)
    await compile_script(parse_text(src, "p.cfg"), build_registry(ModuleSet())).run("request", None, ctx)
    return ctx


async def test_for_walks_every_value_of_headers_contacts_and_avps() -> None:
    ctx = await _run_script(r'''route {
        $var(h) = ""; $var(c) = ""; $var(a) = "";
        for ($var(x) in $(hdr(X-Custom)[*])) { $var(h) = $var(h) + "[" + $var(x) + "]"; }
        for ($var(x) in $(ct[*])) { $var(c) = $var(c) + "<" + $(var(x){nameaddr.uri}{uri.host}) + ">"; }
        $avp(v) = "one, two"; $avp(v) = 3;
        for ($var(x) in $(avp(v)[*])) { $var(a) = $var(a) + "(" + $var(x) + ")"; }
        $var(joined) = "$(avp(v)[*])";
    }''', SUBSCRIBE)
    assert ctx.vars["h"] == "[one][two]"
    assert ctx.vars["c"] == "<10.0.0.1><10.0.0.9>"
    assert ctx.vars["a"] == "(3)(one, two)"        # a value holding ", " stays one value
    assert ctx.vars["joined"] == "3, one, two"      # in a string, [*] joins with ", " as OpenSIPS does


async def test_transformation_chains_on_the_real_message() -> None:
    ctx = await _run_script(r'''route {
        $var(a) = $(fu{uri.user}{s.toupper});
        $var(b) = $(ct{nameaddr.uri}{uri.param,transport});
        $var(c) = $(ct{nameaddr.param,q});
        $var(d) = $(ci{s.select,0,@}{s.len});
        $var(e) = $(ru{re.subst,/^sip:([a-z]+)@.*$/\1/});
        $var(f) = $(fn{s.substr,1,5});
        $var(g) = $(rU{s.int}) + 1;
    }''', SUBSCRIBE)
    assert ctx.vars["a"] == "ALICE" and ctx.vars["b"] == "udp" and ctx.vars["c"] == "0.5"
    assert ctx.vars["d"] == len("a84b4c76e66710") and ctx.vars["e"] == "bob" and ctx.vars["f"] == "Alice"
    assert ctx.vars["g"] == 1   # "bob"{s.int} is 0
