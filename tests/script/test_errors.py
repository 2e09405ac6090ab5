"""Syntax and load-time errors: each reported at its file:line:col, all of them at once."""

from __future__ import annotations

import pytest

from routescript.script import ScriptError, compile_script, parse_text
from routescript.script.registry import Registry


def syntax_errors(src: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ScriptError) as info:
        parse_text(src, "s.cfg")
    return [(d.pos.line, d.pos.col, d.message) for d in info.value.diagnostics]


def compile_errors(src: str, registry: Registry) -> list[str]:
    with pytest.raises(ScriptError) as info:
        compile_script(parse_text(src, "c.cfg"), registry)
    return [f"{d.pos}: {d.message}" for d in info.value.diagnostics]


# ---- syntax ----------------------------------------------------------------------------------------

def test_missing_semicolon_after_call_names_the_call() -> None:
    assert syntax_errors('route {\n  sl_send_reply(404, "Not here")\n  exit;\n}\n') == [
        (2, 33, "expected ';' after sl_send_reply(...)")]


def test_several_errors_are_collected() -> None:
    errs = syntax_errors('route {\n  a()\n  b();\n  if ($var(x) == ) exit;\n  c() d();\n}\n')
    assert [(line, col) for line, col, _ in errs] == [(2, 6), (4, 18), (5, 6)]
    assert errs[1][2].startswith("unexpected ')'")


def test_unknown_route_kind() -> None:
    errs = syntax_errors("rute[main] {\n  exit;\n}\nroute { exit; }\n")
    assert errs == [(1, 1, errs[0][2])]
    assert errs[0][2].startswith("unknown route kind 'rute'")


def test_unterminated_string() -> None:
    errs = syntax_errors('route {\n  xlog("abc);\n  exit;\n}\n')
    assert errs == [(2, 8, "unterminated string: no closing quote before the end of the file")]


def test_unclosed_block_points_at_its_brace() -> None:
    errs = syntax_errors("route {\n  if (a()) {\n    exit;\n  }\n")
    assert errs == [(1, 7, "this '{' is never closed: missing '}' before the end of the file")]
    # issue 17 (the first error at the real cause): when the indentation shows which '{' lacks its '}'
    # (the if's: the last '}' lines up with `route`), that one, not the route's
    errs = syntax_errors("route {\n  if (a()) {\n    exit;\n}\n")
    assert errs == [(2, 12, "this '{' is never closed: missing '}' before the end of the file")]


def test_unterminated_comment() -> None:
    (err,) = syntax_errors("log_level=3\n/* never closed\nroute { exit; }\n")
    assert err[:2] == (2, 1) and "unterminated comment" in err[2]


def test_misspelt_keyword_and_stray_brace_and_else() -> None:
    assert syntax_errors('loadmodul "sl.so"\n')[0][:2] == (1, 1)
    assert "unknown keyword 'loadmodul'" in syntax_errors('loadmodul "sl.so"\n')[0][2]
    assert syntax_errors("route { exit; }\n}\n") == [(2, 1, "unexpected '}': no block is open here")]
    assert "'else' without a matching 'if'" in syntax_errors("route { exit; } else { }")[0][2]


def test_bad_pseudo_variable_position() -> None:
    (err,) = syntax_errors("route {\n  $var(x) = $(hdr(X){s.len);\n}\n")
    assert err[:2] == (2, 21) and "missing '}'" in err[2]


def test_bad_route_headers() -> None:
    errs = syntax_errors("timer_route[t] { exit; }\nfailure_route { exit; }\nstartup_route[x] { exit; }\n"
                         "event_route[E, sometimes] { exit; }\n")
    assert [(line, col) for line, col, _ in errs] == [(1, 1), (2, 1), (3, 15), (4, 16)]
    assert "interval" in errs[0][2] and "needs a name" in errs[1][2]


def test_diagnostic_text_has_line_and_caret() -> None:
    with pytest.raises(ScriptError) as info:
        parse_text('route {\n\tf(1)\n}\n', "s.cfg")
    assert str(info.value) == "s.cfg:2:6: expected ';' after f(...)\n     f(1)\n         ^"


# ---- load time (compile) ---------------------------------------------------------------------------

SRC = '''route {
  nosuch(1);
  log_it();
  num("abc");
  $ru = "x";
  $foo = 1;
  if ($rU =~ "([") exit;
  route(missing);
  shout("bad");
  $var(x) = $(var(y){s.nope});
  $var(x) = $(var(y){s.substr});
  reply_only();
  break;
  arm_failure("nofail");
  set_out($ru, "x");
  $hdr(a b) = 1;
  ok(1);
  $var = 1;
  $ru(x) = 1;
  launch(ok(), done);
}
route[r2] { reply_only(); }
failure_route[f] { req_only(); route(r2); }
route[r2] { exit; }
'''


def test_every_load_time_error_with_its_position(registry: Registry) -> None:
    assert compile_errors(SRC, registry) == [
        "c.cfg:2:3: unknown function nosuch() (is its module loaded?)",
        "c.cfg:3:3: log_it() needs at least 1 argument (0 given)",
        "c.cfg:4:7: argument 1 of num(): expected a number, got \"abc\"",
        "c.cfg:5:3: $ru is read-only: it cannot be assigned",
        "c.cfg:6:3: unknown pseudo-variable $foo",
        "c.cfg:7:14: bad regular expression \"([\": unterminated character set at position 1",
        "c.cfg:8:3: route(missing): there is no route[missing]",
        "c.cfg:9:9: argument 1 of shout(): 'bad' is not a good value",
        "c.cfg:10:21: unknown transformation {s.nope}",
        "c.cfg:11:21: {s.substr} takes 1 to 2 parameters, got 0",
        "c.cfg:12:3: reply_only() cannot be used in route",
        "c.cfg:13:3: 'break' outside a switch or a loop (use 'return' to leave a route)",
        "c.cfg:14:15: argument 1 of arm_failure(): there is no failure_route[nofail]",
        "c.cfg:15:11: argument 1 of set_out(): $ru is read-only, a writable pseudo-variable is needed",
        "c.cfg:16:3: $hdr(a b): bad header name 'a b'",
        "c.cfg:17:3: ok() takes no arguments (1 given)",
        "c.cfg:18:3: $var needs a name in parentheses: $var(...)",
        "c.cfg:19:3: $ru takes no name in parentheses (got $ru(x))",
        "c.cfg:20:3: launch() is not supported by routescript",
        "c.cfg:23:20: req_only() cannot be used in failure_route",
        "c.cfg:24:1: route[r2] is defined twice (first at c.cfg:22:1)",
    ]


def test_sub_route_checked_for_the_kinds_calling_it(registry: Registry) -> None:
    errs = compile_errors("failure_route[f] { route(common); }\nroute { route(common); }\n"
                          "route[common] { req_only(); }\n", registry)
    assert errs == [("c.cfg:3:17: req_only() cannot be used in failure_route "
                     "(route[common] is called from one)")]


def test_misspelt_function_gets_a_hint(registry: Registry) -> None:
    (err,) = compile_errors("route { log_iit(\"x\"); }", registry)
    assert "did you mean log_it()?" in err


def test_transform_fixup_and_param_errors(registry: Registry) -> None:
    errs = compile_errors('route { $var(a) = $(var(b){s.select,x,;}); $var(a) = $(var(b){s.len,1}); }',
                          registry)
    assert errs == ["c.cfg:1:27: {s.select}: the index must be a number",
                    "c.cfg:1:62: {s.len} takes 0 parameters, got 1"]


def test_switch_duplicates_and_foreach_needs_star(registry: Registry) -> None:
    errs = compile_errors('route {\n'
                          ' switch ($var(a)) { case 1: exit; case 1: exit; default: exit; default: exit; }\n'
                          ' for ($var(i) in $avp(x)) exit;\n}\n', registry)
    assert [e.split(": ", 1)[0] for e in errs] == ["c.cfg:2:35", "c.cfg:2:64", "c.cfg:3:18"]


def test_error_from_included_file_names_that_file(tmp_path, registry: Registry) -> None:  # type: ignore[no-untyped-def]
    from routescript.script import parse_file
    (tmp_path / "inc.cfg").write_text("route[sub] {\n  nosuch();\n}\n")
    main = tmp_path / "main.cfg"
    main.write_text('include_file "inc.cfg"\nroute { route(sub); }\n')
    with pytest.raises(ScriptError) as info:
        compile_script(parse_file(main), registry)
    (d,) = info.value.diagnostics
    assert (d.pos.file, d.pos.line, d.pos.col) == (str(tmp_path / "inc.cfg"), 2, 3)
    assert d.source_line == "  nosuch();"


def test_removed_core_keywords_warn_with_their_replacement() -> None:
    # issue 17: the OpenSIPS 1.x/2.x core keywords run (tests/script/test_lang_2x.py); they warn, not fail
    s = parse_text('route {\n  if (uri == myself) exit;\n  if ($rd == myself) exit;\n'
                   '  if (method == "INVITE") exit;\n  if ($rU == NULL) exit;\n}\n', "s.cfg")
    assert [(w.pos.line, w.pos.col) for w in s.warnings] == [(2, 7), (3, 7), (4, 7)]
    assert s.warnings[0].message.startswith("'uri == myself' is an OpenSIPS 1.x/2.x core keyword, removed in "
                                            'OpenSIPS 2.4: use is_myself("$ru")')
    assert 'is_myself("$rd")' in s.warnings[1].message and "$rm" in s.warnings[2].message


def test_no_echo_errors_after_a_broken_top_level_item_or_statement() -> None:
    # one error each: nothing reported at '{' or at the loadmodule before the broken modparam
    errs = syntax_errors('#\nloadmodule "a.so"\nloadmodule "b.so"\nmodparam("a", "x", foo)\n'
                         'modparam("a", "y", 1)\nroute {\n  if (a() == ) exit;\n  b();\n}\n')
    assert [(line, col) for line, col, _ in errs] == [(4, 20), (7, 14)]
    assert "expected one of: '-', a number, a string, yes/no" in errs[0][2]


def test_modparam_boolean_words_are_numbers() -> None:
    s = parse_text('modparam("a", "b", yes)\nmodparam("a", "c", off)\nmodparam("a", "d", "yes")\n', "m.cfg")
    assert [m.value for m in s.modparams] == [1, 0, "yes"]
