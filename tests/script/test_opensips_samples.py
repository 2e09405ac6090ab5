"""The sample scripts OpenSIPS ships (fixtures/opensips, see its README) pass the language check, so
a user can lint an OpenSIPS script that uses modules routescript does not have."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.script import check_syntax, parse_file

SAMPLES = Path(__file__).parent / "fixtures" / "opensips"

EXPECTED_ROUTES = {
    "etc-opensips.cfg": [("request", None), ("request", "relay"), ("branch", "per_branch_ops"),
                         ("onreply", "handle_nat"), ("failure", "missed_call")],
    "residential_default.cfg": [("request", None), ("request", "relay"), ("branch", "per_branch_ops"),
                                ("onreply", "handle_nat"), ("failure", "missed_call")],
    "residential_all.cfg": [("request", None), ("request", "relay"), ("request", "handle_presence"),
                            ("branch", "per_branch_ops"), ("onreply", "handle_nat"),
                            ("failure", "missed_call"), ("local", None)],
    "residential_multidomain.cfg": [("request", None), ("request", "relay"), ("request", "handle_presence"),
                                    ("branch", "per_branch_ops"), ("onreply", "handle_nat"),
                                    ("failure", "missed_call"), ("local", None)],
    "trunking_all.cfg": [("request", None), ("request", "RELAY"), ("failure", "GW_FAILOVER"), ("local", None)],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROUTES))
def test_shipped_sample_passes_the_syntax_check(name: str) -> None:
    path = SAMPLES / name
    assert check_syntax(path) == []
    script = parse_file(path)
    assert [(r.kind, r.name) for r in script.routes] == EXPECTED_ROUTES[name]
    assert any(lm.path == "sl.so" for lm in script.loadmodules)


def test_modparam_yes_is_one_as_in_opensips() -> None:
    script = parse_file(SAMPLES / "residential_all.cfg")
    values = {(m.module, m.param): m.value for m in script.modparams}
    assert values[("auth_db", "calculate_ha1")] == 1          # modparam(..., yes)
    assert values[("mi_fifo", "fifo_mode")] == 0o666          # octal
    assert values[("xcap|presence", "db_url")].startswith("mysql://")  # regex module name, string on next line


def test_every_listen_form_of_the_samples_is_a_socket() -> None:
    script = parse_file(SAMPLES / "residential_all.cfg")
    socks = [str(g.value) for g in script.globals if g.name == "listen"]
    assert socks == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:127.0.0.1:5061"]
