"""Real-world scripts: the OpenSIPS 3.4 default script and a presence server script must pass."""

from __future__ import annotations

from pathlib import Path

from routescript.script import ast, check_syntax, parse_file

FIXTURES = Path(__file__).parent / "fixtures"


def test_default_opensips_34_script_passes_syntax_check() -> None:
    path = FIXTURES / "opensips-3.4-default.cfg"
    assert check_syntax(path) == []
    s = parse_file(path)
    assert [(r.kind, r.name) for r in s.routes] == [
        ("request", None), ("request", "relay"), ("branch", "per_branch_ops"), ("onreply", "handle_nat"),
        ("failure", "missed_call")]
    assert {g.name for g in s.globals} >= {"log_level", "xlog_level", "stderror_enabled", "udp_workers",
                                          "socket", "mpath"}
    assert len(s.loadmodules) == 12 and s.loadmodules[-1].path == "proto_tcp.so"
    assert [m.value for m in s.modparams if (m.module, m.param) == ("mi_fifo", "fifo_mode")] == [0o666]
    assert all(isinstance(m, ast.ModParam) for m in s.modparams)


def test_presence_script_passes_syntax_check() -> None:
    path = FIXTURES / "presence-server.cfg"
    assert check_syntax(path) == []
    s = parse_file(path)
    socks = [g.value for g in s.globals if g.name == "socket"]
    assert [str(v) for v in socks] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060 as 192.0.2.10:5060",
                                       "udp:[::1]:5062"]
    assert socks[2].workers == 2
    kinds = {(r.kind, r.name): r for r in s.routes}
    assert kinds[("timer", "housekeeping")].interval == 60
    assert ("event", "E_CORE_THRESHOLD") in kinds


def test_check_syntax_reports_without_modules(tmp_path: Path) -> None:
    p = tmp_path / "bad.cfg"
    p.write_text('route {\n  route(nowhere);\n  if ($rU =~ "(") exit;\n  break;\n}\n')
    diags = check_syntax(p)
    assert [(d.pos.line, d.pos.col) for d in diags] == [(2, 3), (3, 14), (4, 3)]
    assert "there is no route[nowhere]" in diags[0].message
    assert "bad regular expression" in diags[1].message
    assert "'break' outside" in diags[2].message


def test_check_syntax_missing_file(tmp_path: Path) -> None:
    (d,) = check_syntax(tmp_path / "nope.cfg")
    assert "cannot read" in d.message
