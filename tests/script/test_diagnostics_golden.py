"""Golden output of `routescript check` on broken scripts (issue 17): the first error at its real cause,
no cascade of follow-on errors, never the same diagnostic twice, the summary line, the cap line.

Each script is written the way deployments write them; the expected text is the whole of stderr, with
the temporary directory taken out of the file names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from routescript.cli import main
from routescript.script import ScriptError, parse_text
from routescript.script.grammar import MAX_ERRORS

Capture = pytest.CaptureFixture[str]


def check(tmp_path: Path, capsys: Capture, name: str, text: str,
          syntax_only: bool = True) -> tuple[int, str]:
    path = tmp_path / name
    path.write_text(text)
    rc = main(["check", *(["--syntax-only"] if syntax_only else []), str(path)])
    out = capsys.readouterr()
    return rc, out.err.replace(f"{tmp_path}/", "")


BAD_CONDITION = '''\
loadmodule "sl.so"
loadmodule "tm.so"

route {
    if (!mf_process_maxfwd_header(10)) {
        sl_send_reply(483, "Too Many Hops");
        exit;
    }
    if ($rU == && $rd == "example.com") {
        sl_send_reply(403, "Forbidden");
        exit;
    } else {
        xlog("L_INFO", "$rm from $si\\n");
    }
    if (is_method("OPTIONS")) {
        sl_send_reply(200, "OK");
        exit;
    }
    t_relay();
    exit;
}
'''


def test_bad_condition_mid_route_is_one_error_and_the_route_goes_on(tmp_path: Path, capsys: Capture) -> None:
    # the statements after the broken `if` (and its else branch) are still read as the route's: no
    # "unknown keyword" for each of them
    rc, err = check(tmp_path, capsys, "cond.cfg", BAD_CONDITION)
    assert rc == 1
    assert err == (
        "cond.cfg:9:16: unexpected '&&' after '=='; expected an expression\n"
        '        if ($rU == && $rd == "example.com") {\n'
        "                   ^\n"
        "aborting: 1 error\n")


def test_missing_semicolons_each_reported_once_at_the_statement_end(tmp_path: Path, capsys: Capture) -> None:
    rc, err = check(tmp_path, capsys, "semi.cfg", '''\
loadmodule "sl.so"
loadmodule "tm.so"
modparam("tm", "fr_timeout", 5)

route {
    if (is_method("OPTIONS")) {
        sl_send_reply(200, "OK")
        exit;
    }
    $var(n) = 1
    t_relay();
}
''')
    assert rc == 1
    assert err == (
        "semi.cfg:7:33: expected ';' after sl_send_reply(...)\n"
        '            sl_send_reply(200, "OK")\n'
        "                                    ^\n"
        "semi.cfg:10:16: expected ';' after '1'\n"
        "        $var(n) = 1\n"
        "                   ^\n"
        "aborting: 2 errors\n")


def test_stray_closing_parenthesis_names_the_character(tmp_path: Path, capsys: Capture) -> None:
    rc, err = check(tmp_path, capsys, "paren.cfg", '''\
loadmodule "sl.so"

route {
    if (is_method("OPTIONS")) {
        sl_send_reply(200, "OK"));
        exit;
    }
    sl_send_reply(404, "Not here");
}
''')
    assert rc == 1
    assert err == (
        "paren.cfg:5:33: unexpected ')' after sl_send_reply(...); expected ';'\n"
        '            sl_send_reply(200, "OK"));\n'
        "                                    ^\n"
        "aborting: 1 error\n")


def test_stray_character_is_reported_where_it_is_not_at_the_brace_before_it(
        tmp_path: Path, capsys: Capture) -> None:
    # OpenSIPS's own presence samples (master) carry a backtick at the start of a line. Whether it is an
    # error or (as OpenSIPS 3.4 skips it) a warning, the diagnostic is at the character, never
    # "expected ';' after '{'" on the line above, and the rest of the route is read as statements.
    text = ('loadmodule "sl.so"\nroute {\n    if (!loose_route()) {\n'
            '`       if (is_method("SUBSCRIBE")) {\n            exit;\n        }\n'
            '        sl_send_reply(404, "Not here");\n        exit;\n    }\n    exit;\n}\n')
    _rc, err = check(tmp_path, capsys, "stray.cfg", text)
    first = err.splitlines()[0]
    assert first.startswith("stray.cfg:4:1: ") and "'`'" in first
    assert "expected ';'" not in err and "outside" not in err and "unknown keyword" not in err
    assert len([line for line in err.splitlines() if line.startswith("stray.cfg:")]) == 1


def test_unclosed_brace_says_which_brace_before_the_next_route(tmp_path: Path, capsys: Capture) -> None:
    # the parser sees the route's '{' open; the indentation shows the inner if's is the one left open
    rc, err = check(tmp_path, capsys, "brace.cfg", '''\
loadmodule "sl.so"
loadmodule "tm.so"

route {
    if (is_method("REGISTER")) {
        sl_send_reply(200, "OK");
        exit;
    }
    if (is_method("SUBSCRIBE")) {
        if ($hdr(Event) == "presence") {
            t_relay();
            exit;
    }
    t_relay();
}

failure_route[missed] {
    exit;
}
''')
    assert rc == 1
    assert err == (
        "brace.cfg:17:1: a '}' is missing before 'failure_route' (the '{' on line 10 is never closed)\n"
        "    failure_route[missed] {\n"
        "    ^\n"
        "aborting: 1 error\n")


def test_unclosed_brace_at_the_end_of_the_file(tmp_path: Path, capsys: Capture) -> None:
    rc, err = check(tmp_path, capsys, "eof.cfg",
                    'route {\n    if (is_method("OPTIONS")) {\n        exit;\n    }\n')
    assert rc == 1
    assert err == ("eof.cfg:1:7: this '{' is never closed: missing '}' before the end of the file\n"
                   "    route {\n"
                   "          ^\n"
                   "aborting: 1 error\n")


def test_one_brace_too_many_closes_the_route_early_one_error(tmp_path: Path, capsys: Capture) -> None:
    # before issue 17: one "unknown top-level keyword" per statement after the extra '}'
    rc, err = check(tmp_path, capsys, "closed.cfg", '''\
loadmodule "sl.so"
loadmodule "tm.so"

route {
    if (is_method("OPTIONS")) {
        sl_send_reply(200, "OK");
        exit;
    }
    }
    if (is_method("INVITE")) {
        t_relay();
    }
    sl_send_reply(404, "Not here");
    exit;
}

route[other] {
    exit;
}
''')
    assert rc == 1
    assert err == (
        "closed.cfg:10:5: 'if' is outside any route: the route above ends at the '}' on line 9 "
        "(one '}' too many?)\n"
        '        if (is_method("INVITE")) {\n'
        "        ^\n"
        "aborting: 1 error\n")


def _dialplan(n: int) -> str:
    rules = "".join(f'    if ($rU == "{1000 + i}") {{ $du = "sip:10.0.1.{i}:5060" }}\n' for i in range(n))
    return f'loadmodule "sl.so"\n\nroute {{\n{rules}    sl_send_reply(404, "Not here");\n}}\n'


def test_errors_past_the_cap_are_counted_not_dropped_silently(tmp_path: Path, capsys: Capture) -> None:
    # 60 rules, each missing its ';' before the '}': 60 real errors, MAX_ERRORS shown
    rc, err = check(tmp_path, capsys, "dialplan.cfg", _dialplan(60))
    assert rc == 1
    lines = err.splitlines()
    heads = [line for line in lines if line.startswith("dialplan.cfg:")]
    assert len(heads) == MAX_ERRORS == 50
    assert heads[0] == "dialplan.cfg:4:51: expected ';' after '\"sip:10.0.1.0:5060\"'"
    assert heads[-1] == "dialplan.cfg:53:52: expected ';' after '\"sip:10.0.1.49:5060\"'"
    assert len(set(heads)) == len(heads)
    assert lines[-2:] == ["(10 more errors not shown)", "aborting: 60 errors"]
    # the full check prints the same summary
    rc, err = check(tmp_path, capsys, "dialplan.cfg", _dialplan(60), syntax_only=False)
    assert rc == 1 and err.splitlines()[-2:] == ["(10 more errors not shown)", "aborting: 60 errors"]


def test_break_outside_a_loop_refused_by_both_checks(tmp_path: Path, capsys: Capture) -> None:
    text = ('loadmodule "sl.so"\nroute {\n    if ($rm == "OPTIONS") {\n'
            '        sl_send_reply(200, "OK");\n        break;\n    }\n    exit;\n}\n')
    expected = ("brk.cfg:5:9: 'break' outside a switch or a loop (use 'return' to leave a route)\n"
                "            break;\n"
                "            ^\n"
                "aborting: 1 error\n")
    assert check(tmp_path, capsys, "brk.cfg", text) == (1, expected)
    assert check(tmp_path, capsys, "brk.cfg", text, syntax_only=False) == (1, expected)


def test_unknown_core_parameter_is_an_error_with_the_summary(tmp_path: Path, capsys: Capture) -> None:
    text = ('log_level = 3\nport = 5060\ntcp_accept_aliases = 1\nmcast_ttl = 4\nloadmodule "sl.so"\n'
            'route {\n    sl_send_reply(404, "Not here");\n}\n')
    rc, err = check(tmp_path, capsys, "port.cfg", text, syntax_only=False)
    assert rc == 1
    assert err == ("port.cfg:2:1: unknown core parameter 'port' (the port is part of each socket: "
                   "socket = udp:127.0.0.1:5060)\n"
                   "    port = 5060\n"
                   "    ^\n"
                   "port.cfg:3:1: core parameter tcp_accept_aliases = yes: the Via ;alias parameter "
                   "(RFC 5923 connection reuse) is not built; replies go back over the connection the "
                   "request came on\n"
                   "    tcp_accept_aliases = 1\n"
                   "    ^\n"
                   "port.cfg:4:1: core parameter mcast_ttl = 4: multicast sockets are not supported\n"
                   "    mcast_ttl = 4\n"
                   "    ^\n"
                   "aborting: 3 errors\n")


def test_warnings_are_counted_in_the_summary(tmp_path: Path, capsys: Capture) -> None:
    (tmp_path / "routes.cfg").write_text('route {\n    xlog("x")\n}\n')
    text = 'import_file "local-overrides.cfg"\ninclude_file "routes.cfg"\n'
    rc, err = check(tmp_path, capsys, "warn.cfg", text)
    assert rc == 1
    assert err == ("routes.cfg:2:14: expected ';' after xlog(...)\n"
                   '        xlog("x")\n'
                   "                 ^\n"
                   'warn.cfg:1:1: warning: import_file "local-overrides.cfg": No such file or directory; '
                   'skipped\n'
                   '    import_file "local-overrides.cfg"\n'
                   "    ^\n"
                   "aborting: 1 error, 1 warning\n")


def test_same_diagnostic_never_recorded_twice() -> None:
    # every way back to the same spot: the loader keeps one of each (position, message)
    with pytest.raises(ScriptError) as info:
        parse_text('route {\n' + '    xlog("a") xlog("b")\n' * 3 + '}\n', "d.cfg")
    keys = [(d.pos, d.message) for d in info.value.diagnostics]
    assert len(keys) == len(set(keys)) == 3


def test_readme_shows_the_real_output_of_check(tmp_path: Path, capsys: Capture) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## When a script is wrong"):readme.index("## The script")]
    script, output = re.findall(r"```\n(.*?)```", section, re.S)[:2]
    command, expected = output.split("\n", 1)
    assert command == "$ routescript check broken.cfg"
    assert check(tmp_path, capsys, "broken.cfg", script, syntax_only=False) == (1, expected)


def test_output_never_repeats_a_diagnostic() -> None:
    from routescript.script.diagnostics import Diagnostic, summary_lines, without_repeats
    from routescript.script.pos import Pos

    a = Diagnostic(Pos("r.cfg", 3, 5), "unknown function nosuch()")
    w = Diagnostic(Pos("r.cfg", 1, 1), "old keyword", severity="warning")
    shown = without_repeats([w, a, a, w])
    assert shown == [w, a]
    assert summary_lines(shown) == ["aborting: 1 error, 1 warning"]


def test_run_on_a_broken_script_ends_with_the_summary(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "run.cfg"
    path.write_text(_dialplan(55))
    res = subprocess.run([sys.executable, "-m", "routescript.cli", "run", str(path)], check=False,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    tail = [line.split(": ", 1)[-1] for line in res.stderr.splitlines()[-2:]]
    assert tail == ["(5 more errors not shown)", "aborting: 55 errors"]


def test_recovery_skips_a_string_that_spans_lines() -> None:
    # the broken statement's string holds a ';' and a newline: recovery skips the whole string (strings
    # may span lines), so the statements after it are not read as new errors
    text = 'route {\n    if ($var(x) == ) xlog("a;\n}");\n    exit;\n}\n'
    with pytest.raises(ScriptError) as info:
        parse_text(text, "s.cfg")
    errors = [d for d in info.value.diagnostics if d.severity == "error"]
    assert [(d.pos.line, d.pos.col) for d in errors] == [(2, 20)]
