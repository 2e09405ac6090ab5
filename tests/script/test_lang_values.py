"""Issue 17, values: IP addresses and networks as values, strings that span lines, characters OpenSIPS's
lexer skips, master's one-argument assert(expr) and named indexes ([append], [insert]).

Each construct has a parse test and a test of its meaning at run time (compiled routes driven with a
MsgContext whose source is a given address)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest

from routescript.script import ast, compile_script, parse_text
from routescript.script.context import REQUEST_ROUTE, MsgContext
from routescript.script.diagnostics import ScriptError
from routescript.script.ipmatch import network_test, parse_network
from routescript.script.pvars import core_pvars
from routescript.script.registry import Registry
from routescript.sip.address import SocketInfo, Source

Calls = Any  # conftest.Calls: the log of the test functions' calls


@pytest.fixture
def reg(registry: Registry) -> Registry:
    """The test functions of conftest (log_it, ...) with the core's pseudo-variables ($si, $socket_in)."""
    r = registry
    for spec in core_pvars():
        r.add_pvar(spec)
    return r


def from_addr(host: str, local: str = "192.168.0.1") -> MsgContext:
    return MsgContext(source=Source("udp", SocketInfo("udp", local, 5060), host, 5060))


async def run(src: str, registry: Registry, ctx: MsgContext, **kw) -> int:  # type: ignore[no-untyped-def]
    return await compile_script(parse_text(src, "v.cfg"), registry, **kw).run(REQUEST_ROUTE, None, ctx)


def logged(calls: Calls) -> list[str]:
    return [c[1] for c in calls.log if c[0] == "log_it"]


def first_cond(script: ast.Script) -> ast.BinOp:
    stmt = script.routes[0].body.stmts[0]
    assert isinstance(stmt, ast.If) and isinstance(stmt.cond, ast.BinOp)
    return stmt.cond


def compile_errors(src: str, registry: Registry) -> list[str]:
    with pytest.raises(ScriptError) as info:
        compile_script(parse_text(src, "c.cfg"), registry)
    return [f"{d.pos.line}:{d.pos.col}: {d.message}" for d in info.value.diagnostics]


# ---------------------------------------------------------------------------------------------------
# IP addresses and networks

EDGE_PROXY = """
# a typical edge proxy: trust the private networks and the SBC, refuse the rest
socket = udp:192.168.0.1:5060

route {
    if ($si == 127.0.0.1 || $si == ::1) {
        log_it("local");
        exit;
    }
    if ($si == 10.0.0.0/8 || $si == 172.16.0.0/12 || $si == 192.168.0.0/255.255.0.0) {
        log_it("private");
    } else if ($si == 2001:db8::/32 || $si == [fe80::]/10) {
        log_it("v6 trusted");
    } else if ($socket_in(ip) == 192.168.0.1 && $si != 203.0.113.7) {
        log_it("public on lan socket");
    } else {
        log_it("refused");
    }
}
"""


@pytest.mark.parametrize("text, network", [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("10.1.2.3/8", "10.0.0.0/8"),            # host bits dropped, as OpenSIPS's mk_net does
    ("192.168.0.0/255.255.0.0", "192.168.0.0/16"),
    ("192.168.0.1", "192.168.0.1/32"),        # a bare address: that one address
    ("::1", "::1/128"),
    ("2001:db8::/32", "2001:db8::/32"),
    ("[::1]", "::1/128"),
    ("[2001:db8::]/32", "2001:db8::/32"),
    ("fe80::1", "fe80::1/128"),
    ("::ffff:10.0.0.1", "::ffff:a00:1/128"),
    ("2001:db8:0:0:0:0:0:1", "2001:db8::1/128"),
    ("2001:db8::/ffff:ffff::", "2001:db8::/32"),
])
def test_ip_literal_parses_to_its_network(text: str, network: str) -> None:
    cond = first_cond(parse_text(f"route {{ if ($si == {text}) exit; }}"))
    assert isinstance(cond.right, ast.IpLit)
    assert cond.right.network == ipaddress.ip_network(network) and cond.right.text == text


def test_ip_literal_is_not_read_as_a_number() -> None:
    # before issue 17: "expected ';' after '10'"
    script = parse_text("route { if ($si == 10.0.0.0/8 && $si != 10.0.0.1) exit; }")
    cond = first_cond(script)
    assert isinstance(cond.left, ast.BinOp) and isinstance(cond.left.right, ast.IpLit)
    assert isinstance(cond.right, ast.BinOp) and isinstance(cond.right.right, ast.IpLit)


def test_words_and_numbers_near_ip_literals_still_lex_as_before() -> None:
    script = parse_text("route { $var(a) = 10/2; if ([$var(a)]) exit; $var(c) = 0x10; }")
    assign = script.routes[0].body.stmts[0]
    assert isinstance(assign, ast.Assign) and isinstance(assign.value, ast.BinOp) and assign.value.op == "/"


def test_edge_proxy_script_parses() -> None:
    script = parse_text(EDGE_PROXY, "edge.cfg")
    assert not script.warnings and len(script.routes) == 1


@pytest.mark.parametrize("text, why", [
    ("300.0.0.1", "not an IP address"),
    ("10.0.0.0/33", "longer than 32 bits"),
    ("10.0.0.0/255.0.255.0", "not a run of ones"),
    ("2001:db8::/129", "longer than 128 bits"),
])
def test_bad_ip_literal_is_an_error_at_its_position(text: str, why: str) -> None:
    with pytest.raises(ScriptError) as info:
        parse_text(f"route {{\n  if ($si == {text}) exit;\n}}", "b.cfg")
    [d] = info.value.diagnostics
    assert (d.pos.line, d.pos.col) == (2, 14) and f"'{text}'" in d.message and why in d.message


def test_ip_literal_only_with_equality(reg: Registry) -> None:
    errs = compile_errors('route {\n if ($si < 10.0.0.1) exit;\n $var(x) = 10.0.0.1;\n}', reg)
    assert errs[0].startswith("2:6: an IP address or network (10.0.0.1) can only be compared with == or !=")
    assert errs[1].startswith("3:12: an IP address or network (10.0.0.1) is a value only in == and !=")


@pytest.mark.parametrize("source, expected", [
    ("127.0.0.1", "local"),
    ("::1", "local"),
    ("0:0:0:0:0:0:0:1", "local"),             # compared as addresses, not as strings
    ("10.20.30.40", "private"),
    ("172.31.255.255", "private"),
    ("172.32.0.1", "public on lan socket"),
    ("192.168.77.1", "private"),
    ("2001:db8:1::5", "v6 trusted"),
    ("2001:DB8::5", "v6 trusted"),
    ("fe80::1234", "v6 trusted"),
    ("2001:db9::1", "public on lan socket"),
    ("203.0.113.7", "refused"),
])
async def test_edge_proxy_routes_by_source_network(reg: Registry, calls: Calls, source: str,
                                                   expected: str) -> None:
    await run(EDGE_PROXY, reg, from_addr(source))
    assert logged(calls) == [expected]


async def test_socket_in_ip_compared_with_an_address(reg: Registry, calls: Calls) -> None:
    await run(EDGE_PROXY, reg, from_addr("198.51.100.1", local="192.168.0.2"))
    assert logged(calls) == ["refused"]


async def test_null_and_non_address_values(reg: Registry, calls: Calls) -> None:
    # OpenSIPS route.c: NULL == net is false, NULL != net true; a value that is no address fails both
    src = '''route {
        if ($si == 10.0.0.0/8) log_it("si in");
        if ($si != 10.0.0.0/8) log_it("si not in");
        $var(h) = "example.com";
        if ($var(h) == 10.0.0.0/8) log_it("name in");
        if ($var(h) != 10.0.0.0/8) log_it("name not in");
        $var(v4) = "10.0.0.1";
        if ($var(v4) != ::1) log_it("v4 is not v6");
        if (10.0.0.0/8 == $var(v4)) log_it("either side");
    }'''
    await run(src, reg, MsgContext())  # no source: $si is NULL
    assert logged(calls) == ["si not in", "v4 is not v6", "either side"]


def test_network_test_closure() -> None:
    inside = network_test(parse_network("10.0.0.0/8"), negate=False)
    outside = network_test(parse_network("10.0.0.0/8"), negate=True)
    assert inside("10.255.0.1") and not inside("11.0.0.1") and not inside("::ffff:10.0.0.1")
    assert outside("11.0.0.1") and not outside("10.0.0.1") and outside(None) and not outside("x")
    assert network_test(parse_network("::1"), negate=False)("[::1]")
    assert not inside("10.0.0.1" + " " * 100) and not outside("x" * 10_000)  # too long to be an address


def test_socket_in_field_checked_at_load(reg: Registry) -> None:
    errs = compile_errors("route { if ($socket_in(advertised) == 10.0.0.1) exit; }", reg)
    assert "unknown field 'advertised'" in errs[0]


async def test_socket_in_fields(reg: Registry, calls: Calls) -> None:
    src = 'route { log_it("$socket_in $socket_in(ip) $socket_in(port) $socket_in(proto) $socket_in(af)"); }'
    await run(src, reg, from_addr("10.0.0.9", local="::1"))
    assert logged(calls) == ["udp:[::1]:5060 ::1 5060 udp INET6"]


# ---------------------------------------------------------------------------------------------------
# strings that span lines

MULTILINE = '''route {
    append_body("v=0
o=- 0 0 IN IP4 $si
s=-\\
continued");
}'''


def test_string_spanning_lines_keeps_the_newline() -> None:
    script = parse_text(MULTILINE.replace("append_body", "log_it"), "m.cfg")
    call = script.routes[0].body.stmts[0]
    assert isinstance(call, ast.Call)
    s = call.args[0]
    assert isinstance(s, ast.StrLit)
    assert s.value == "v=0\no=- 0 0 IN IP4 $si\ns=-continued"  # an escaped newline is removed
    pv = s.parts[1]
    assert isinstance(pv, ast.PVar) and (pv.pos.line, pv.pos.col) == (3, 16)


async def test_string_spanning_lines_at_run_time(reg: Registry, calls: Calls) -> None:
    await run(MULTILINE.replace("append_body", "log_it"), reg, from_addr("10.0.0.9"))
    assert logged(calls) == ["v=0\no=- 0 0 IN IP4 10.0.0.9\ns=-continued"]


def test_modparam_string_spanning_lines() -> None:
    script = parse_text('modparam("json", "x", "{\n  \\"a\\": 1\n}")\nroute { exit; }')
    assert script.modparams[0].value == '{\n  "a": 1\n}'


def test_unterminated_string_is_reported_at_its_quote() -> None:
    with pytest.raises(ScriptError) as info:
        parse_text('route {\n  xlog("abc);\n  exit;\n}\n')
    [d] = info.value.diagnostics
    assert (d.pos.line, d.pos.col) == (2, 8) and d.message.startswith("unterminated string")


# ---------------------------------------------------------------------------------------------------
# characters OpenSIPS's lexer skips

STRAY = """route {
`    log_it("after a backtick");
    $var(a) = 1 @;
    log_it("line \\
continued");
    if ($var(a) == 1) ?log_it("one");
}
"""


def test_stray_characters_are_skipped_with_a_warning_at_each() -> None:
    script = parse_text(STRAY, "s.cfg")
    got = [(w.severity, w.pos.line, w.pos.col, w.message) for w in script.warnings]
    assert [g[:3] for g in got] == [("warning", 2, 1), ("warning", 3, 17), ("warning", 6, 23)]
    assert got[0][3].startswith("stray character '`' skipped")
    assert "'@'" in got[1][3] and "'?'" in got[2][3]
    assert str(script.warnings[0]).startswith("s.cfg:2:1: warning: stray character")


def test_control_and_non_ascii_characters_are_skipped() -> None:
    script = parse_text("route {\n  exit;\u00a0\x01\n}")
    assert [(w.pos.line, w.pos.col) for w in script.warnings] == [(2, 8), (2, 9)]
    assert "\\x01" in script.warnings[1].message


def test_backslash_newline_outside_strings_is_silent() -> None:
    script = parse_text("route {\n  if ($var(a) == 1 \\\n      && $var(b) == 2) exit;\n}")
    assert script.warnings == []


async def test_stray_characters_do_not_change_the_meaning(reg: Registry, calls: Calls) -> None:
    await run(STRAY, reg, MsgContext())
    assert logged(calls) == ["after a backtick", "line continued", "one"]


# ---------------------------------------------------------------------------------------------------
# master's assert(expr)

def test_one_argument_assert_parses() -> None:
    script = parse_text('route { assert($var(a) == 1); assert($var(b) == 2, "b is two"); }')
    one, two = script.routes[0].body.stmts
    assert isinstance(one, ast.Assert) and one.message is None
    assert isinstance(two, ast.Assert) and two.message == "b is two"


async def test_one_argument_assert_at_run_time(reg: Registry, calls: Calls, caplog) -> None:  # type: ignore[no-untyped-def]
    src = ('route { $var(a) = 1; assert($var(a) == 1); log_it("held"); '
           'assert($si == 10.0.0.0/8); log_it("x"); }')
    with caplog.at_level(logging.ERROR, logger="routescript.script"):
        rc = await run(src, reg, from_addr("192.0.2.1"), enable_asserts=True)
    assert rc == 0 and logged(calls) == ["held"]
    assert "v.cfg:1:60: assertion failed" in caplog.text and "assertion failed:" not in caplog.text


# ---------------------------------------------------------------------------------------------------
# named indexes

def test_named_indexes_parse() -> None:
    script = parse_text('route { $(sdp.line([12])[insert]) = "a=sendrecv"; $(avp(x)[append]) = 1; '
                        '$avp(y)[append] = 2; $(sdp.stream(audio[0]/a=rtpmap[2])[insertAfter]) = "x"; }')
    sdp, avp, short, stream = script.routes[0].body.stmts
    assert isinstance(sdp, ast.Assign) and (sdp.target.name, sdp.target.key, sdp.target.index) == \
        ("sdp.line", "[12]", "insert")
    assert isinstance(avp, ast.Assign) and avp.target.index == "append"
    assert isinstance(short, ast.Assign) and short.target.index == "append"
    assert isinstance(stream, ast.Assign) and stream.target.key == "audio[0]/a=rtpmap[2]"
    assert stream.target.index == "insertAfter"


def test_unimplemented_opensips_pvar_is_named_as_such(reg: Registry) -> None:
    errs = compile_errors('route {\n  $(sdp.line([12])[insert]) = "a=sendrecv";\n  $sdp_lnie = 1;\n}', reg)
    assert errs == ["2:3: $sdp.line is an OpenSIPS pseudo-variable that routescript does not implement",
                    "3:3: unknown pseudo-variable $sdp_lnie"]


def test_named_index_must_be_one_the_pvar_takes(reg: Registry) -> None:
    errs = compile_errors('route {\n $(avp(x)[insert]) = 1;\n $var(a) = $(avp(x)[append]);\n}', reg)
    assert errs == ["2:2: $(avp(x)[insert]): $avp takes [append], not [insert]",
                    "3:12: $(avp(x)[append]): [append] names a position to assign, not a value to read"]


async def test_append_index_at_run_time(reg: Registry, calls: Calls) -> None:
    src = '''route {
        $avp(codecs) = "PCMA"; $avp(codecs) = "PCMU";
        $(avp(codecs)[append]) = "G729";
        log_it("$(avp(codecs)[0]) $(avp(codecs)[1]) $(avp(codecs)[2])");
    }'''
    await run(src, reg, MsgContext())
    assert logged(calls) == ["PCMU PCMA G729"]


async def test_an_address_as_a_whole_argument_is_its_text(registry, calls) -> None:  # type: ignore[no-untyped-def]
    # OpenSIPS 1.x/2.x scripts pass addresses unquoted (`forward(127.0.0.1, 9)`, profile.cfg): a bare word
    from routescript.script import compile_script, parse_text
    from routescript.script.context import REQUEST_ROUTE, MsgContext

    script = parse_text('route {\n    log_it(10.0.0.1, ::1);\n}\n', "a.cfg")
    await compile_script(script, registry).run(REQUEST_ROUTE, None, MsgContext())
    assert [c[1:] for c in calls.log if c[0] == "log_it"] == [("10.0.0.1", "::1")]
