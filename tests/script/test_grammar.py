"""Grammar and AST: every construct of the language parses to the node it should, with its position."""

from __future__ import annotations

import pytest

from routescript.script import ScriptError, ast, parse_text
from routescript.script.pos import Pos


def body(src: str) -> tuple:
    """Statements of `route { src }`."""
    return parse_text("route {\n" + src + "\n}\n", "g.cfg").routes[0].body.stmts


def expr(src: str):  # type: ignore[no-untyped-def]
    (s,) = body(f"if ({src}) exit;")
    return s.cond


# ---- global part -----------------------------------------------------------------------------------

def test_global_values_are_typed() -> None:
    s = parse_text('log_level=3\nstderror_enabled=no\nfoo=on\nbar=TRUE\nlog_facility=LOG_LOCAL0\n'
                   'server_header="Server: X"\nneg=-1\nhex=0x10\nalias=example.com\n', "g.cfg")
    got = {g.name: g.value for g in s.globals}
    assert got == {"log_level": 3, "stderror_enabled": False, "foo": True, "bar": True,
                   "log_facility": "LOG_LOCAL0", "server_header": "Server: X", "neg": -1, "hex": 16,
                   "alias": "example.com"}
    assert s.globals[5].quoted and not s.globals[4].quoted
    assert s.globals[1].pos == Pos("g.cfg", 2, 1)


@pytest.mark.parametrize("text, proto, host, port, adv, workers", [
    ("socket=udp:127.0.0.1:5060", "udp", "127.0.0.1", 5060, None, None),
    ("listen=udp:[::1]:5060", "udp", "::1", 5060, None, None),
    ("socket=tcp:[2001:db8::1]:5061 as 192.0.2.1:5061", "tcp", "2001:db8::1", 5061, "192.0.2.1:5061", None),
    ("socket=udp:eth0:5060 use_workers 4", "udp", "eth0", 5060, None, 4),
    ("listen=udp:*:5060 use_children 2 as example.com", "udp", "*", 5060, "example.com", 2),
    ("socket=127.0.0.1", None, "127.0.0.1", None, None, None),
    ('socket="udp:127.0.0.1:5070"', "udp", "127.0.0.1", 5070, None, None),
])
def test_socket_forms(text: str, proto, host, port, adv, workers) -> None:  # type: ignore[no-untyped-def]
    (g,) = parse_text(text + "\n", "g.cfg").globals
    v = g.value
    assert isinstance(v, ast.SocketSpec)
    assert (v.proto, v.host, v.port, v.advertised, v.workers) == (proto, host, port, adv, workers)


def test_socket_str_is_what_the_core_parses() -> None:
    (g,) = parse_text("socket=udp:[::1]:5060 as 1.2.3.4:5060 use_workers 3 reuse_port\n", "g.cfg").globals
    assert str(g.value) == "udp:[::1]:5060 as 1.2.3.4:5060"
    assert g.value.flags == ("reuse_port",)


def test_loadmodule_and_modparam() -> None:
    s = parse_text('loadmodule "sl.so"\nmodparam("tm", "fr_timeout", 5)\n'
                   'modparam("mi_fifo","fifo_mode",0666)\n'
                   'modparam("a;b", "p", "str");\nmodparam("x", "n", -2)\n', "g.cfg")
    assert s.loadmodules == [ast.LoadModule("sl.so", Pos("g.cfg", 1, 1))]
    assert [(m.module, m.param, m.value) for m in s.modparams] == [
        ("tm", "fr_timeout", 5), ("mi_fifo", "fifo_mode", 0o666), ("a;b", "p", "str"), ("x", "n", -2)]
    assert s.modparams[1].pos == Pos("g.cfg", 3, 1)


# ---- routes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, name, params", [
    ("route { exit; }", "request", None, ()),
    ("route[main] { exit; }", "request", None, ()),
    ("route[0] { exit; }", "request", None, ()),
    ("request_route { exit; }", "request", None, ()),
    ("route[relay] { exit; }", "request", "relay", ()),
    ('route["quoted"] { exit; }', "request", "quoted", ()),
    ("route[1] { exit; }", "request", "1", ()),
    ("onreply_route { exit; }", "onreply", None, ()),
    ("onreply_route[nat] { exit; }", "onreply", "nat", ()),
    ("failure_route[missed] { exit; }", "failure", "missed", ()),
    ("branch_route[br] { exit; }", "branch", "br", ()),
    ("local_route { exit; }", "local", None, ()),
    ("startup_route { exit; }", "startup", None, ()),
    ("error_route { exit; }", "error", None, ()),
    ("timer_route[tick, 60] { exit; }", "timer", "tick", (60,)),
    ("event_route[E_PIKE_BLOCKED] { exit; }", "event", "E_PIKE_BLOCKED", ()),
    ("event_route[E_PIKE_BLOCKED, async] { exit; }", "event", "E_PIKE_BLOCKED", ("async",)),
])
def test_route_kinds(text: str, kind: str, name, params) -> None:  # type: ignore[no-untyped-def]
    (r,) = parse_text(text, "g.cfg").routes
    assert (r.kind, r.name, r.params) == (kind, name, params)
    assert isinstance(r.body.stmts[0], ast.Exit)


def test_timer_interval_property() -> None:
    (r,) = parse_text("timer_route[t, 5] {}", "g.cfg").routes
    assert r.interval == 5 and r.body.stmts == ()


# ---- statements --------------------------------------------------------------------------------------

def test_if_else_chain_with_and_without_braces() -> None:
    (s,) = body('if (a()) b(); else if (c()) { d(); } else e();')
    assert isinstance(s, ast.If) and isinstance(s.then, ast.Call)
    assert isinstance(s.orelse, ast.If) and isinstance(s.orelse.then, ast.Block)
    assert isinstance(s.orelse.orelse, ast.Call) and s.orelse.orelse.name == "e"
    assert s.pos == Pos("g.cfg", 2, 1)


def test_empty_blocks_and_stray_semicolons() -> None:
    stmts = body('if (a()) { } else { b(); };\n;\nc();')
    assert isinstance(stmts[0], ast.If) and stmts[0].then == ast.Block((), stmts[0].then.pos)
    assert [type(s).__name__ for s in stmts] == ["If", "Call"]


def test_switch_cases() -> None:
    (s,) = body('switch ($rm) {\n case "INVITE": a(); break;\n case -1:\n case 0x2: b();\n default: c();\n}')
    assert isinstance(s, ast.Switch)
    assert [(c.value, c.is_default) for c in s.cases] == [("INVITE", False), (-1, False), (2, False),
                                                          (None, True)]
    assert isinstance(s.cases[0].body[1], ast.Break) and s.cases[1].body == ()
    assert s.cases[0].pos == Pos("g.cfg", 3, 2)


def test_while_and_foreach() -> None:
    w, f = body('while ($var(i) < 10) $var(i) = $var(i) + 1;\n'
                'for ($var(v) in $(avp(list)[*])) { xlog("$var(v)"); }')
    assert isinstance(w, ast.While) and isinstance(w.body, ast.Assign)
    assert isinstance(f, ast.ForEach) and f.var.name == "var" and f.iterable.index == "*"
    assert f.iterable.key == "list"


@pytest.mark.parametrize("op", ["=", ":=", "+=", "-=", "*=", "/=", "%=", "|=", "&="])
def test_assignment_operators(op: str) -> None:
    (s,) = body(f"$var(x) {op} 4;")
    assert isinstance(s, ast.Assign) and s.op == op and s.value == ast.IntLit(4, s.value.pos)


def test_assign_null() -> None:
    (s,) = body("$var(x) = NULL;")
    assert isinstance(s.value, ast.NullLit)


def test_route_calls_return_exit_drop_break() -> None:
    stmts = body('route(relay);\nroute(r, 1, "a", $var(x));\nreturn(-1);\nreturn;\nreturn 2;\nexit;\n'
                 'exit();\ndrop;\nreturn();')
    assert stmts[0] == ast.RouteCall("relay", (), stmts[0].pos)
    assert [type(a).__name__ for a in stmts[1].args] == ["IntLit", "StrLit", "PVar"]
    assert stmts[2].value.value == -1 and stmts[3].value is None and stmts[4].value.value == 2
    assert [type(s).__name__ for s in stmts[5:]] == ["Exit", "Exit", "Drop", "Return"]


def test_function_call_arguments() -> None:
    (s,) = body('f("s", 1, $var(x), NAT, , \'single\');')
    assert isinstance(s, ast.Call) and s.name == "f"
    a = s.args
    assert a[0].value == "s" and a[1].value == 1 and a[2].name == "var"
    assert a[3] == ast.Ident("NAT", a[3].pos) and a[4] is None and a[5].value == "single"
    (s,) = body("f();")
    assert s.args == ()


def test_async_launch_assert() -> None:
    a, la, t = body('async(db_query("select 1", $avp(r)), resume);\nlaunch(exec("x"), done);\n'
                    'assert($var(a) == 1, "a must be one");')
    assert isinstance(a, ast.Async) and a.call.name == "db_query" and a.resume_route == "resume"
    assert isinstance(la, ast.Launch) and la.routes == ("done",)
    assert isinstance(t, ast.Assert) and t.message == "a must be one"


# ---- expressions ---------------------------------------------------------------------------------------

def test_precedence_and_or_not() -> None:
    # OpenSIPS (cfg.y `%left OR AND`, `%right NOT`): && and || are one level, left to right; `!` binds
    # tighter than both and negates a whole comparison
    e = expr("a() || b() && !c()")
    assert e.op == "&&" and e.left.op == "||" and e.right.op == "!"
    e = expr("a() or b() and not c()")
    assert e.op == "&&" and e.left.op == "||" and e.right.op == "!"
    e = expr("a() && b() || c()")
    assert e.op == "||" and e.left.op == "&&"
    e = expr("!$var(x) == 1")
    assert e.op == "!" and e.operand.op == "=="


@pytest.mark.parametrize("op", ["==", "!=", "<", ">", "<=", ">=", "=~", "!~"])
def test_comparison_operators(op: str) -> None:
    e = expr(f"$var(a) {op} 'x'")
    assert e.op == op and e.left.name == "var" and e.right.value == "x"


def test_arithmetic_and_bitwise_precedence() -> None:
    # OpenSIPS (cfg.y `%left BOR BAND BXOR BLSHIFT BRSHIFT`, `%left PLUS MINUS SLASH MULT MODULO`): the
    # arithmetic operators are one level, left to right, above the bitwise ones (one level too)
    e = expr("$var(a) + 2 * 3 - 1 == 5 | 2 & 1")
    assert e.op == "=="
    assert e.left.op == "-" and e.left.left.op == "*" and e.left.left.left.op == "+"
    assert e.right.op == "&" and e.right.left.op == "|"
    e = expr("(1 << 2) ^ ~$var(x) >> 1 % 3 / 2")
    assert e.op == ">>" and e.left.op == "^" and e.left.left.op == "<<" and e.left.right.op == "~"
    assert e.right.op == "/" and e.right.left.op == "%"


def test_literals() -> None:
    e = expr("$var(a) == -5 || $var(b) == 0x1F || $var(c) == NULL || [ $var(d) + 1 ]")
    assert e.left.left.left.right.value == -5
    assert e.left.left.right.right.value == 31
    assert isinstance(e.left.right.right, ast.NullLit)
    assert e.right.op == "+"


def test_pseudo_variable_forms() -> None:
    e = expr("$ru == $(hdr(From)[1]{nameaddr.uri}{uri.user}) && $(avp(x)[*]) && $avp(y)[-1]"
             " && $ct.fields(uri) && $(avp(z)[$var(i)]) && $T_reply_code")
    pv = e.left.left.left.left.left.right
    assert (pv.name, pv.key, pv.index) == ("hdr", "From", 1)
    assert [t.name for t in pv.transforms] == ["nameaddr.uri", "uri.user"]
    assert e.left.left.left.left.right.index == "*"
    assert e.left.left.left.right.index == -1
    assert (e.left.left.right.name, e.left.left.right.key) == ("ct.fields", "uri")
    assert isinstance(e.left.right.index, ast.PVar) and e.left.right.index.key == "i"
    assert e.right.name == "T_reply_code"


def test_transformation_params() -> None:
    (s,) = body('$var(x) = $(var(y){s.substr,1,$var(n)}{s.select,0,;}{re.subst,/^a(b)/\\1/g});')
    t = s.value.transforms
    assert t[0].params[0] == 1 and isinstance(t[0].params[1], ast.PVar)
    assert t[1].params == (0, ";")
    assert t[2].name == "re.subst" and t[2].params == ("/^a(b)/\\1/g",)


def test_strings_with_embedded_pseudo_variables() -> None:
    (s,) = body('xlog("L_INFO", "$fu to $ru: $(hdr(X){s.len}) costs 5$ \\"q\\"\\n");')
    lit = s.args[1]
    assert [p if isinstance(p, str) else p.text for p in lit.parts] == [
        "$fu", " to ", "$ru", ": ", "$(hdr(X){s.len})", ' costs 5$ "q"\n']
    assert lit.parts[0].pos == Pos("g.cfg", 2, 17)
    assert lit.parts[2].pos == Pos("g.cfg", 2, 24)


def test_single_quoted_string_and_regex_escapes_kept() -> None:
    (s,) = body("if ($rU =~ '^1\\.800[0-9]+$') exit;")
    assert s.cond.right.value == "^1\\.800[0-9]+$"


def test_comments_of_every_kind_and_preprocessor_lines() -> None:
    s = parse_text("#!define FOO 1\n// line comment\n/* block\n comment */ log_level=1 # trailing\n"
                   "route { /* inline */ exit; // after\n }\n", "g.cfg")
    assert [g.name for g in s.globals] == ["log_level"] and s.globals[0].pos == Pos("g.cfg", 4, 13)
    assert isinstance(s.routes[0].body.stmts[0], ast.Exit)


def test_keywords_are_case_sensitive_names_stay_names() -> None:
    (s,) = body("routing();")
    assert isinstance(s, ast.Call) and s.name == "routing"


def test_syntax_error_is_script_error() -> None:
    with pytest.raises(ScriptError):
        parse_text("route { if }", "g.cfg")
