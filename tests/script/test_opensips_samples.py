"""A registrar/proxy script in the style of the samples OpenSIPS ships (fixtures/registrar-proxy.cfg,
our own text using the same constructs) passes the language check, so a user can lint an OpenSIPS
script that uses modules routescript does not have."""

from __future__ import annotations

from pathlib import Path

from routescript.script import check_syntax, parse_file

SAMPLE = Path(__file__).parent / "fixtures" / "registrar-proxy.cfg"


def test_sample_style_script_passes_the_syntax_check() -> None:
    assert check_syntax(SAMPLE) == []
    script = parse_file(SAMPLE)
    assert [(r.kind, r.name) for r in script.routes] == [
        ("request", None), ("request", "relay"), ("request", "handle_presence"),
        ("branch", "per_branch_ops"), ("onreply", "handle_nat"), ("failure", "missed_call"), ("local", None)]
    assert any(lm.path == "sl.so" for lm in script.loadmodules)


def test_modparam_yes_is_one_as_in_opensips() -> None:
    script = parse_file(SAMPLE)
    values = {(m.module, m.param): m.value for m in script.modparams}
    assert values[("auth_db", "calculate_ha1")] == 1          # modparam(..., yes)
    assert values[("mi_fifo", "fifo_mode")] == 0o666          # octal
    assert values[("xcap|presence", "db_url")].startswith("mysql://")  # regex module name, value on next line


def test_every_listen_form_is_a_socket() -> None:
    script = parse_file(SAMPLE)
    socks = [str(g.value) for g in script.globals if g.name == "listen"]
    assert socks == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:127.0.0.1:5061"]
