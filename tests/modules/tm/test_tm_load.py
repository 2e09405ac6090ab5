"""tm at load time: t_relay's flags, the route arguments of t_on_*, and the parameters that are built
or refused with the reason (never silently ignored)."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.core.server import LoadError, Server

HEAD = 'loadmodule "sl.so"\nloadmodule "tm.so"\n'


def load(tmp_path: Path, text: str) -> Server:
    path = tmp_path / "s.cfg"
    path.write_text(HEAD + text)
    server = Server()
    server.load(str(path))
    return server


def errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "s.cfg"
    path.write_text(HEAD + text)
    with pytest.raises(LoadError) as info:
        Server().load(str(path))
    return [str(d).splitlines()[0] for d in info.value.diagnostics]


def test_proxy_script_loads_without_warnings(tmp_path: Path) -> None:
    server = load(tmp_path, 'modparam("tm", "fr_inv_timeout", 30)\n'
                  'modparam("tm", "restart_fr_on_each_reply", 0)\n'
                  'route {\n  t_on_reply("r"); t_on_failure("f"); t_on_branch("b"); t_set_fr(20, 3);\n'
                  '  $T_fr_inv_timeout = 25;\n  if (!t_relay("0x3")) sl_reply_error();\n'
                  '  t_relay("no-auto-477, no-dns-failover");\n}\n'
                  'onreply_route[r] { if (t_check_status("18[0-9]")) xlog("ringing $T_reply_reason\\n"); }\n'
                  'failure_route[f] { if (t_was_cancelled() || t_local_replied("all")) exit; t_relay(); }\n'
                  'branch_route[b] { xlog("branch $T_branch_idx\\n"); }\n')
    tm = server.modules.get("tm")
    assert tm is not None and tm.settings.fr_inv_timeout == 30.0 and not tm.settings.restart_fr_on_each_reply
    assert server.loaded is not None and server.loaded.warnings == []


@pytest.mark.parametrize(("flags", "why"), [('"0x10"', "0x10 are not supported"),
                                            ('"allow-no-cancel"', "not supported yet"),
                                            ('"no-auto-477,bogus"', "'bogus' is unknown")])
def test_t_relay_flags_we_do_not_implement_are_refused(tmp_path: Path, flags: str, why: str) -> None:
    found = errors(tmp_path, f"route {{\n  t_relay({flags});\n}}\n")
    assert len(found) == 1 and ":4:11: " in found[0] and why in found[0]


def test_t_on_failure_needs_a_failure_route(tmp_path: Path) -> None:
    found = errors(tmp_path, 'route {\n  t_on_failure("missing");\n  t_relay();\n}\n')
    assert len(found) == 1 and "failure_route[missing]" in found[0]


@pytest.mark.parametrize("param", ["delete_timer", "ruri_matching", "minor_branch_flag"])
def test_unbuilt_parameters_refuse_other_values(tmp_path: Path, param: str) -> None:
    value = '"3"' if param == "minor_branch_flag" else "9"
    found = errors(tmp_path, f'modparam("tm", "{param}", {value})\nroute {{ exit; }}\n')
    assert len(found) == 1 and param in found[0] and "not supported yet" in found[0]


@pytest.mark.parametrize(("given", "uri"), [("udp:192.0.2.1:5080", "sip:192.0.2.1:5080;transport=udp"),
                                            ("TCP:192.0.2.1", "sip:192.0.2.1;transport=tcp"),
                                            ("192.0.2.1:5070", "sip:192.0.2.1:5070"),
                                            ("sip:proxy@192.0.2.1", "sip:proxy@192.0.2.1")])
def test_t_relay_outbound_proxy_forms(given: str, uri: str) -> None:
    from routescript.modules.tm import outbound_proxy_uri

    assert outbound_proxy_uri(given) == uri


def test_t_relay_named_flags_are_the_old_bits() -> None:
    from routescript.modules.tm import _relay_flags

    assert _relay_flags("no-auto-477,no-dns-failover") == 0x6
    assert _relay_flags("pass-reason-hdr") == 0x8 and _relay_flags(0x1) == 1 and _relay_flags("") == 0


def test_wt_timer_is_the_wait_after_an_invites_2xx(tmp_path: Path) -> None:
    server = load(tmp_path, 'modparam("tm", "wt_timer", 3)\nroute { exit; }\n')
    assert server.modules.get("tm").transaction_options()["wait_timer"] == 3.0


def test_t_cancel_branch_flags_are_checked_at_load(tmp_path: Path) -> None:
    found = errors(tmp_path, 'route { t_on_reply("r"); t_relay(); }\n'
                   'onreply_route[r] { t_cancel_branch("x"); }\n')
    assert len(found) == 1 and "expected a (all) or o (others)" in found[0]
    load(tmp_path, 'route { t_on_reply("r"); t_relay(); }\nonreply_route[r] { t_cancel_branch("o"); }\n')
