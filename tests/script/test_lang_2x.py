"""OpenSIPS 1.x/2.x language in conditions (issue 17): the core keywords (`method == "INVITE"`,
`uri == myself`, `src_ip == 10.0.0.0/8`, `msg:len >= max_len`...) and `if`/`while` without
parentheses parse, run with the meaning OpenSIPS 2.2 gave them (cfg.y exp_cond, route.c eval_elem),
and warn once per kind and file with the OpenSIPS 3.x replacement."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.core.functions import core_functions
from routescript.core.server import Server
from routescript.script import ScriptError, ast, check_syntax, compile_script, parse_file, parse_text
from routescript.script.compile_legacy import MAX_LEN
from routescript.script.context import ONREPLY_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.script.pvars import core_pvars
from routescript.script.registry import Registry
from routescript.script.transforms import core_transforms
from routescript.sip import parse_message
from routescript.sip.address import SocketInfo, Source

FIXTURES = Path(__file__).parent / "fixtures"

# ---- a server and messages ---------------------------------------------------------------------------

UDP_SOCK = SocketInfo("udp", "10.0.0.10", 5060)
TCP6_SOCK = SocketInfo("tcp", "2001:db8::1", 5061)


def _server() -> Server:
    server = Server()
    server.sockets = [UDP_SOCK, TCP6_SOCK]
    server.config.aliases.append("proxy.example.com")
    return server


SERVER = _server()


def _registry() -> Registry:
    reg = Registry()
    for f in core_functions():
        reg.add_function(f)
    for p in core_pvars():
        reg.add_pvar(p)
    for t in core_transforms():
        reg.add_transform(t)
    return reg


REGISTRY = _registry()


def _request(method: str, ruri: str, frm: str, to: str) -> bytes:
    return (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.2.3:5070;branch=z9hG4bK1\r\n"
            f"From: <{frm}>;tag=a1\r\nTo: <{to}>\r\nCall-ID: c1@test\r\nCSeq: 1 {method}\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def _reply(code: int, reason: str) -> bytes:
    return (f"SIP/2.0 {code} {reason}\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK1\r\n"
            f"From: <sip:alice@proxy.example.com>;tag=a1\r\nTo: <sip:bob@elsewhere.org>;tag=b1\r\n"
            f"Call-ID: c1@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


# A: an INVITE for us (by address) from a private IPv4 host, over UDP
# B: a SUBSCRIBE for elsewhere, from an IPv6 host over TCP
# C: a MESSAGE for us (by alias, another port), sent by ourselves
MESSAGES = {
    "A": (_request("INVITE", "sip:bob@10.0.0.10", "sip:alice@proxy.example.com", "sip:bob@elsewhere.org"),
          Source("udp", UDP_SOCK, "10.1.2.3", 5070)),
    "B": (_request("SUBSCRIBE", "sip:carol@elsewhere.org:5070", "sip:dave@elsewhere.org",
                   "sip:carol@proxy.example.com"),
          Source("tcp", TCP6_SOCK, "2001:db8::5", 5080, conn_id=7)),
    "C": (_request("MESSAGE", "sip:bob@proxy.example.com:5080", "sip:eve@10.0.0.10:5070",
                   "sip:bob@proxy.example.com:5080"),
          Source("udp", UDP_SOCK, "10.0.0.10", 5090)),
}


def _ctx(name: str, route_type: str = REQUEST_ROUTE) -> MsgContext:
    raw, source = MESSAGES[name]
    return MsgContext(msg=parse_message(raw), source=source, server=SERVER, route_type=route_type)


async def _truth(cond: str, ctx: MsgContext) -> bool:
    """Whether `cond` holds in a request route over ctx."""
    src = f"route {{\n  $var(r) = 0;\n  if ({cond}) $var(r) = 1;\n}}\n"
    compiled = compile_script(parse_text(src, "t.cfg"), REGISTRY)
    await compiled.run(REQUEST_ROUTE, None, ctx)
    return bool(ctx.vars["r"])


# ---- parse: each construct ---------------------------------------------------------------------------

def _cond(text: str) -> ast.Expr:
    script = parse_text(f"route {{ if ({text}) exit; }}", "p.cfg")
    stmt = script.routes[0].body.stmts[0]
    assert isinstance(stmt, ast.If)
    return stmt.cond


@pytest.mark.parametrize(("text", "keyword", "op", "value", "quoted"), [
    ('method == "INVITE"', "method", "==", "INVITE", True),
    ("method==REGISTER", "method", "==", "REGISTER", False),
    ('method != "MESSAGE"', "method", "!=", "MESSAGE", True),
    ('method =~ "^(PUBLISH|SUBSCRIBE)$"', "method", "=~", "^(PUBLISH|SUBSCRIBE)$", True),
    ('uri =~ "^sip:[0-9]+@"', "uri", "=~", "^sip:[0-9]+@", True),
    ('uri == "sip:bob@example.com"', "uri", "==", "sip:bob@example.com", True),
    ('from_uri =~ "@example\\.com"', "from_uri", "=~", "@example\\.com", True),
    ('to_uri != "sip:x@y"', "to_uri", "!=", "sip:x@y", True),
    ('status =~ "18[0-9]"', "status", "=~", "18[0-9]", True),
    ("src_ip == 10.0.0.0/8", "src_ip", "==", "10.0.0.0/8", False),
    ("src_ip==192.168.0.10", "src_ip", "==", "192.168.0.10", False),
    ("src_ip != 192.168.0.0/255.255.0.0", "src_ip", "!=", "192.168.0.0/255.255.0.0", False),
    ("dst_ip == ::1", "dst_ip", "==", "::1", False),
    ("src_ip == [2001:db8::5]", "src_ip", "==", "[2001:db8::5]", False),
    ("src_ip == backup.foo.bar", "src_ip", "==", "backup.foo.bar", False),
    ('src_ip =~ "^10\\."', "src_ip", "=~", "^10\\.", True),
    ("src_port == 5060", "src_port", "==", "5060", False),
    ("dst_port >= 5061", "dst_port", ">=", "5061", False),
    ("proto == UDP", "proto", "==", "UDP", False),
    ("proto != tls", "proto", "!=", "tls", False),
    ("af == INET6", "af", "==", "INET6", False),
    ("af==inet", "af", "==", "inet", False),
    ("msg:len >= 2048", "msg:len", ">=", "2048", False),
    ("msg:len > max_len", "msg:len", ">", "max_len", False),
])
def test_core_keyword_tests_parse(text: str, keyword: str, op: str, value: str, quoted: bool) -> None:
    cond = _cond(text)
    assert isinstance(cond, ast.CoreTest)
    assert (cond.keyword, cond.op, cond.value, cond.quoted) == (keyword, op, value, quoted)
    assert (cond.pos.line, cond.pos.col) == (1, 13)


@pytest.mark.parametrize(("text", "subject", "negated"), [
    ("uri == myself", "uri", False),
    ("uri==myself", "uri", False),
    ("uri != myself", "uri", True),
    ("from_uri == myself", "from_uri", False),
    ("to_uri == myself", "to_uri", False),
    ("src_ip == myself", "src_ip", False),
    ("dst_ip != myself", "dst_ip", True),
    ("myself == uri", "uri", False),
    ("myself != src_ip", "src_ip", True),
])
def test_myself_tests_parse(text: str, subject: str, negated: bool) -> None:
    cond = _cond(text)
    assert cond == ast.Myself(subject, negated, cond.pos)


def test_myself_after_a_variable_parses() -> None:
    cond = _cond("$rd == myself")
    assert isinstance(cond, ast.Myself) and not cond.negated
    assert isinstance(cond.subject, ast.PVar) and cond.subject.name == "rd"
    cond = _cond("$(hdr(Route){uri.host}) != myself")
    assert isinstance(cond, ast.Myself) and cond.negated and isinstance(cond.subject, ast.PVar)


def test_not_and_combinations_bind_as_in_2x() -> None:
    # 2.x `!uri==myself` is `!(uri == myself)` (cfg.y: NOT exp, the whole test is one exp_elem)
    cond = _cond("!uri==myself")
    assert isinstance(cond, ast.UnaryOp) and cond.op == "!" and isinstance(cond.operand, ast.Myself)
    cond = _cond('!(uri == myself) && method == "INVITE"')
    assert isinstance(cond, ast.BinOp) and cond.op == "&&"
    assert isinstance(cond.left, ast.UnaryOp) and isinstance(cond.right, ast.CoreTest)
    cond = _cond("src_ip == 10.0.0.0/8 || src_ip == 192.168.0.0/16")
    assert isinstance(cond, ast.BinOp) and cond.op == "||"
    assert isinstance(cond.left, ast.CoreTest) and isinstance(cond.right, ast.CoreTest)


def test_keywords_stay_plain_words_elsewhere() -> None:
    # `uri` as a bare function argument, and names that only start like a keyword
    s = parse_text("route { f(uri); g(proto_udp); $var(uri) = 1; if (methods()) exit; }", "w.cfg")
    call = s.routes[0].body.stmts[0]
    assert isinstance(call, ast.Call) and call.args == (ast.Ident("uri", call.args[0].pos),)  # type: ignore[union-attr]
    assert not s.warnings


@pytest.mark.parametrize("src", [
    'route { if method == "INVITE" { exit; } }',
    "route { if uri == myself exit; }",
    "route { if $var(x) { exit; } }",
    'route { if [ $var(x) == 2 ] xlog("x"); }',
    "route { if (a()) && (b()) exit; else drop; }",
    "route { if !is_method(\"ACK\") exit; }",
    "route { while $var(i) < 3 { $var(i) = $var(i) + 1; } }",
])
def test_if_and_while_without_parentheses_parse(src: str) -> None:
    s = parse_text(src, "b.cfg")
    bare = [w.message.split(" without")[0] for w in s.warnings if "without" in w.message]
    assert bare in (["'if'"], ["'while'"])


def test_if_with_parentheses_does_not_warn() -> None:
    s = parse_text("route { if ($var(x)) { exit; } if (a()) b(); else c(); while ($var(i) < 1) d(); }",
                   "p.cfg")
    assert s.warnings == []
    stmts = s.routes[0].body.stmts
    assert isinstance(stmts[1], ast.If) and isinstance(stmts[1].then, ast.Call)


# ---- warnings: once per kind and file, with the replacement --------------------------------------------

def test_warning_text_names_the_3x_replacement() -> None:
    s = parse_text('route {\n  if (method == "INVITE") exit;\n  if (uri == myself) exit;\n'
                   "  if (msg:len > max_len) exit;\n  if $var(x) exit;\n}\n", "w.cfg")
    assert [str(w).split("\n")[0] for w in s.warnings] == [
        ("w.cfg:2:7: warning: 'method' is an OpenSIPS 1.x/2.x core keyword, removed in OpenSIPS 2.4: use $rm "
         "(or is_method()) (accepted here with its 2.x meaning)"),
        ("w.cfg:3:7: warning: 'uri == myself' is an OpenSIPS 1.x/2.x core keyword, removed in OpenSIPS 2.4: "
         'use is_myself("$ru") (accepted here with its 2.x meaning)'),
        ("w.cfg:4:7: warning: 'msg:len' is an OpenSIPS 1.x/2.x core keyword, removed in OpenSIPS 2.4: "
         "use $ml (max_len is 65535) (accepted here with its 2.x meaning)"),
        ("w.cfg:5:3: warning: 'if' without parentheses around its condition is OpenSIPS 2.x syntax, refused "
         "since OpenSIPS 3.1: write if (...) (accepted here)"),
    ]
    assert all(w.severity == "warning" for w in s.warnings)


@pytest.mark.parametrize(("cond", "replacement"), [
    ('uri == "x"', "$ru"), ('status == "200"', "$rs"), ('from_uri =~ "x"', "$fu"), ('to_uri == "x"', "$tu"),
    ("src_ip == 1.2.3.4", "$si"), ("dst_ip == 1.2.3.4", "$Ri"), ("src_port == 1", "$sp"),
    ("dst_port == 1", "$Rp"), ("proto == udp", "$pr"), ("af == INET", "$af"),
    ("from_uri == myself", 'is_myself("$fu")'), ("to_uri == myself", 'is_myself("$tu")'),
    ("src_ip == myself", 'is_myself("$si")'), ("myself == dst_ip", 'is_myself("$Ri")'),
    ("$var(h) == myself", 'is_myself("$var(h)")'),
])
def test_each_kind_names_its_replacement(cond: str, replacement: str) -> None:
    (w,) = parse_text(f"route {{ if ({cond}) exit; }}", "k.cfg").warnings
    assert f"removed in OpenSIPS 2.4: use {replacement} (accepted here" in w.message


def test_each_kind_warns_once_per_file(tmp_path: Path) -> None:
    (tmp_path / "sub.cfg").write_text('route[sub] {\n  if (method == "BYE") exit;\n'
                                      '  if (uri == myself) exit;\n}\n')
    main = tmp_path / "main.cfg"
    main.write_text('include_file "sub.cfg"\nroute {\n  if (method == "INVITE") exit;\n'
                    '  if (method == "ACK" || method == "CANCEL") exit;\n  if (uri == myself) exit;\n'
                    '  if (!uri == myself) exit;\n  if (uri =~ "^sip:1") exit;\n  if (uri == "sip:x") exit;\n'
                    "  if $var(a) exit;\n  if $var(b) exit;\n  route(sub);\n}\n")
    s = parse_file(main)
    seen = [(Path(w.pos.file).name, w.pos.line, w.message.split("'")[1]) for w in s.warnings]
    assert sorted(seen) == sorted([
        ("sub.cfg", 2, "method"), ("sub.cfg", 3, "uri == myself"),
        ("main.cfg", 3, "method"), ("main.cfg", 5, "uri == myself"), ("main.cfg", 7, "uri"),
        ("main.cfg", 9, "if"),
    ])


def test_the_2x_script_checks_with_warnings_only() -> None:
    path = FIXTURES / "proxy-2x.cfg"
    diags = check_syntax(path)
    assert diags and all(d.severity == "warning" for d in diags)
    kinds = [d.message.split("'")[1] for d in diags]
    assert len(kinds) == len(set(kinds))  # once per kind
    assert set(kinds) == {"msg:len", "method", "if", "src_ip", "uri == myself", "from_uri == myself", "proto",
                          "af", "src_port", "dst_port", "uri", "myself", "to_uri == myself", "status"}


def test_the_2x_script_loads_as_run_would() -> None:
    loaded = Server().load(str(FIXTURES / "proxy-2x.cfg"))
    assert loaded.route_count == 2
    assert sum("OpenSIPS 1.x/2.x core keyword" in w.message for w in loaded.warnings) == 13


# ---- meaning at run time -----------------------------------------------------------------------------

@pytest.mark.parametrize(("cond", "expected"), [
    # method: case-insensitive (2.x comp_strval uses strncasecmp), a bare word too
    ('method == "INVITE"', "A"), ('method == "invite"', "A"), ("method == INVITE", "A"),
    ('method != "INVITE"', "BC"), ('method =~ "^(sub|mess)"', "BC"), ('method !~ "inv"', "BC"),
    # uri: the request URI ($ru)
    ('uri == "SIP:BOB@10.0.0.10"', "A"), ('uri =~ "^sip:bob@"', "AC"), ('uri != "sip:bob@10.0.0.10"', "BC"),
    ('from_uri =~ "@proxy\\.example\\.com$"', "A"), ('to_uri == "sip:carol@PROXY.example.com"', "B"),
    # myself: is_myself of the URI (no port = 5060) or of the address (any port)
    ("uri == myself", "AC"), ("uri != myself", "B"), ("myself == uri", "AC"), ("!uri==myself", "B"),
    ("from_uri == myself", "A"), ("to_uri == myself", "BC"), ("src_ip == myself", "C"),
    ("dst_ip == myself", "ABC"), ("myself != src_ip", "AB"),
    ("$rd == myself", "AC"), ("$fd != myself", "B"),
    # addresses and networks
    ("src_ip == 10.1.2.3", "A"), ('src_ip == "10.1.2.3"', "A"), ("src_ip == 10.0.0.0/8", "AC"),
    ("src_ip != 10.0.0.0/8", "B"), ("src_ip == 10.0.0.0/255.255.255.0", "C"),
    ("src_ip == 2001:db8::/32", "B"), ("src_ip == [2001:db8::5]", "B"), ('src_ip =~ "^10\\.0\\."', "C"),
    ("dst_ip == 10.0.0.10", "AC"), ("dst_ip == 2001:DB8::1", "B"), ("src_ip == localhost", ""),
    ("src_ip != no-such-host.invalid", "ABC"),
    # ports, protocol, address family, length
    ("src_port == 5070", "A"), ("src_port >= 5080", "BC"),
    ("dst_port == 5061", "B"), ("dst_port != 5060", "B"),
    ("proto == UDP", "AC"), ("proto == tcp", "B"), ("proto != udp", "B"),
    ("af == INET", "AC"), ("af == INET6", "B"), ("af == inet6", "B"), ("af == 10", "B"),
    ("msg:len > 100", "ABC"), ("msg:len < max_len", "ABC"), ("msg:len >= max_len", ""),
    # combinations
    ('method == "INVITE" && uri == myself', "A"), ("proto == UDP || af == INET6", "ABC"),
    ('!(src_ip == 10.0.0.0/8) && method == "SUBSCRIBE"', "B"),
])
async def test_core_keyword_meaning(cond: str, expected: str) -> None:
    got = [name for name in MESSAGES if await _truth(cond, _ctx(name))]
    assert "".join(got) == expected


@pytest.mark.parametrize(("old", "new"), [
    ("uri == myself", 'is_myself("$ru")'), ("from_uri == myself", 'is_myself("$fu")'),
    ("to_uri == myself", 'is_myself("$tu")'), ("src_ip == myself", 'is_myself("$si")'),
    ("dst_ip == myself", 'is_myself("$Ri")'), ("$rd == myself", 'is_myself("$rd")'),
    ("uri != myself", '!is_myself("$ru")'),
    ('method == "SUBSCRIBE"', '$rm == "SUBSCRIBE"'), ("src_port == 5070", "$sp == 5070"),
    ("dst_port < 5061", "$Rp < 5061"), ("msg:len > 300", "$ml > 300"), ("proto == TCP", '$pr == "tcp"'),
    ("af == INET6", '$af == "INET6"'), ("src_ip == 10.1.2.3", '$si == "10.1.2.3"'),
])
async def test_2x_test_behaves_as_its_3x_replacement(old: str, new: str) -> None:
    for name in MESSAGES:
        assert await _truth(old, _ctx(name)) == await _truth(new, _ctx(name)), (old, name)


async def test_msg_len_is_the_message_length_and_max_len_65535() -> None:
    ctx = _ctx("A")
    n = len(MESSAGES["A"][0])
    assert MAX_LEN == 65535
    assert await _truth(f"msg:len == {n}", ctx) and not await _truth(f"msg:len != {n}", _ctx("A"))


async def test_status_in_a_reply_route() -> None:
    src = ('onreply_route {\n  $var(r) = 0;\n  if (status =~ "18[0-9]") $var(r) = 1;\n'
           '  if (status == "486") $var(r) = 2;\n  if (status != 200 && status =~ "^2") $var(r) = 3;\n}\n')
    compiled = compile_script(parse_text(src, "r.cfg"), REGISTRY)
    got = []
    for code, reason in ((180, "Ringing"), (486, "Busy Here"), (202, "Accepted"), (200, "OK")):
        ctx = MsgContext(msg=parse_message(_reply(code, reason)), source=MESSAGES["A"][1], server=SERVER,
                         route_type=ONREPLY_ROUTE)
        await compiled.run(ONREPLY_ROUTE, None, ctx)
        got.append(ctx.vars["r"])
    assert got == [1, 2, 3, 0]


async def test_a_missing_value_makes_string_tests_false() -> None:
    # no message (a startup-like context): 2.x evaluated these as errors, i.e. false, even for !=
    for cond in ('method == "INVITE"', 'method != "INVITE"', 'uri =~ "x"', 'uri !~ "x"', "src_ip == 1.2.3.4",
                 "proto == udp", "src_port == 5060"):
        assert not await _truth(cond, MsgContext(server=SERVER)), cond


async def test_if_and_while_without_parentheses_run() -> None:
    src = ('route {\n  $var(n) = 0;\n  while $var(n) < 3 { $var(n) = $var(n) + 1; }\n'
           '  if method == "INVITE" { $var(r) = "invite"; } else $var(r) = "other";\n'
           '  if (is_myself("$ru")) && (src_port == 5070) $var(s) = 1;\n}\n')
    compiled = compile_script(parse_text(src, "b.cfg"), REGISTRY)
    got = []
    for name in MESSAGES:
        ctx = _ctx(name)
        await compiled.run(REQUEST_ROUTE, None, ctx)
        got.append((ctx.vars["n"], ctx.vars["r"], ctx.vars.get("s")))
    assert got == [(3, "invite", 1), (3, "other", None), (3, "other", None)]


# ---- what 2.x could not evaluate: load-time errors ------------------------------------------------------

@pytest.mark.parametrize(("cond", "message"), [
    ('method < "INVITE"', "'method <': method compares with ==, !=, =~ or !~"),
    ("src_ip > 10.0.0.1", "'src_ip >': src_ip compares with ==, !=, =~ or !~"),
    ("src_ip == 10.0.0.0/33", "'src_ip == 10.0.0.0/33': expected an IP address, a network"),
    ("src_port == http", "'src_port == http': expected a number"),
    ('src_port =~ "50"', "'src_port =~': src_port compares with a number"),
    ("msg:len > min_len", "'msg:len > min_len': expected a number or max_len"),
    ("proto == carrier_pigeon", "'proto == carrier_pigeon': expected a protocol"),
    ("proto < udp", "'proto <': proto compares with == or !="),
    ("af == 7", "'af == 7': expected INET or INET6"),
    ("method == myself", "'method == myself': myself compares with uri, from_uri, to_uri, src_ip, dst_ip"),
    ('uri =~ "("', 'bad regular expression "("'),
])
def test_what_2x_could_not_evaluate_is_a_load_error(cond: str, message: str) -> None:
    with pytest.raises(ScriptError) as info:
        compile_script(parse_text(f"route {{\n  if ({cond}) exit;\n}}\n", "e.cfg"), REGISTRY)
    (d,) = info.value.diagnostics
    assert (d.pos.line, d.pos.col) == (2, 7) or "regular expression" in message
    assert message in d.message


def test_syntax_only_check_reports_them_too(tmp_path: Path) -> None:
    cfg = tmp_path / "e.cfg"
    cfg.write_text("route {\n  if (proto == pigeon) exit;\n}\n")
    assert [(d.severity, d.pos.line) for d in check_syntax(cfg)] == [("error", 2), ("warning", 2)]


@pytest.mark.parametrize("cond", ["uri =~ myself", "$var(h) < myself", "src_ip >= myself"])
def test_myself_compares_with_equality_only(cond: str) -> None:
    with pytest.raises(ScriptError) as info:
        parse_text(f"route {{\n  if ({cond}) exit;\n}}\n", "m.cfg")
    (d,) = [x for x in info.value.diagnostics if x.severity == "error"]   # beside the keyword's warning
    assert (d.pos.line, d.pos.col) == (2, 7) and "myself compares with == or != only" in d.message


def test_keyword_needs_a_literal_as_in_2x() -> None:
    # 2.x compared the keywords with literals only (`uri == $var(x)` was a syntax error there too)
    with pytest.raises(ScriptError):
        parse_text("route { if (uri == $var(x)) exit; }", "s.cfg")
