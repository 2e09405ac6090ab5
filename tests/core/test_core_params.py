"""Every core parameter is built, accepted with a reason, or refused for any value but ours (issue 22):
the policy tables cover OpenSIPS 3.4's whole list, each refusal names the parameter and why at its line,
and the parameters built in this issue do what docs/core-parameters.md says."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest

from routescript.core.config import (
    KNOWN_GLOBALS, L_DBG, OPENSIPS_CORE_PARAMS, CoreConfig, apply_globals, unknown_globals)
from routescript.core.dispatch import MessageDispatcher
from routescript.core.loading import default_db_urls
from routescript.core.loader import ModParam
from routescript.core.module import ConfigError
from routescript.core.param_policy import ACCEPTED, REFUSED, UNSET
from routescript.core.replies import Replier
from routescript.core.resource_limits import set_resource_limits
from routescript.core.routes import Routes
from routescript.core.stats import CoreCounters
from routescript.sip import parse_message

P = ("c.cfg", 7, 1)


def test_every_opensips_parameter_is_typed_and_the_policy_names_only_known_ones() -> None:
    assert sorted(OPENSIPS_CORE_PARAMS - KNOWN_GLOBALS.keys()) == []
    assert sorted((ACCEPTED.keys() | REFUSED.keys()) - KNOWN_GLOBALS.keys()) == []
    assert not ACCEPTED.keys() & REFUSED.keys()


def _other_value(name: str) -> Any:
    """A value REFUSED refuses for `name`."""
    allowed, _why = REFUSED[name]
    kind = KNOWN_GLOBALS[name][0]
    if kind == "bool":
        return "no" if allowed else "yes"
    if kind == "int":
        return 7 if allowed != 7 else 8
    return "something"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_value_is_an_error_naming_the_parameter_and_why(name: str) -> None:
    value = _other_value(name)
    with pytest.raises(ConfigError) as info:
        apply_globals([(name, value, P)])
    text = str(info.value)
    assert text.startswith("c.cfg:7:1: core parameter ") and f" {name} = " in text
    assert len(text.split(": ", 2)[2]) > 20      # the reason, not only the name
    allowed = REFUSED[name][0]
    if allowed is not UNSET:                     # the value that says what routescript does loads
        cfg, _ = apply_globals([(name, allowed, P)])
        assert cfg.get(name) == allowed or name in ("fork", "dont_fork")


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_an_accepted_parameter_loads_with_its_reason_noted(name: str) -> None:
    kind = KNOWN_GLOBALS[name][0]
    value = {"bool": "yes", "int": 16}.get(kind, "x")
    cfg, warnings = apply_globals([(name, value, P)])
    assert warnings == []
    assert [n for n in cfg.notes if f"'{name}'" in n] == [
        f"core parameter '{name}' accepted without effect: {ACCEPTED[name]}"]


def test_every_refusal_of_a_script_is_reported_in_one_run() -> None:
    errors: list[ConfigError] = []
    apply_globals([("mhomed", 1, ("a.cfg", 1, 1)), ("log_level", 3, None), ("tos", "0x10", ("a.cfg", 3, 1)),
                   ("chroot", "/no-such-dir-rs22", ("a.cfg", 4, 1))], errors)
    assert [e.pos for e in errors] == [("a.cfg", 1, 1), ("a.cfg", 3, 1), ("a.cfg", 4, 1)]


def test_names_of_other_versions_have_hints() -> None:
    found = [m for m, _pos in unknown_globals([("tcp_children", 4, P), ("pi_framework", "x", P)])]
    assert found == ["unknown core parameter 'tcp_children' (OpenSIPS 2.x's name: tcp_workers)",
                     ("unknown core parameter 'pi_framework' (an OpenSIPS 4.x parameter of the pi_http "
                      "framework; routescript follows 3.4 and has no pi_http)")]


# --- the parameters built in issue 22 --------------------------------------------------------------------

def test_debug_mode_logs_everything_to_stderr_only() -> None:
    cfg, _ = apply_globals([("log_level", 1, P), ("syslog_enabled", "yes", P), ("stderror_enabled", "no", P),
                            ("debug_mode", "yes", P)])
    assert (cfg.log_level, cfg.stderror_enabled, cfg.syslog_enabled) == (L_DBG, True, False)


def test_script_compiler_options_and_other_names() -> None:
    cfg, _ = apply_globals([("max_while_loops", 20, P), ("enable_asserts", "yes", P),
                            ("abort_on_assert", "yes", P), ("workdir", "/", P), ("execdnsthreshold", 9, P)])
    assert cfg.compile_options() == {"max_while_loops": 20, "enable_asserts": True, "abort_on_assert": True}
    assert (cfg.get("wdir"), cfg.positions["wdir"], cfg.get("exec_dns_threshold")) == ("/", P, 9)
    with pytest.raises(ConfigError, match="'max_while_loops' must be at least 1"):
        apply_globals([("max_while_loops", 0, P)])


def test_tcp_connect_timeout_in_ms_and_five_seconds_unset() -> None:
    assert apply_globals([])[0].tcp_connect_timeout == 5.0
    assert apply_globals([("tcp_connect_timeout", 250, P)])[0].tcp_connect_timeout == 0.25


def test_level_filters_are_log_levels() -> None:
    cfg, _ = apply_globals([("stderror_level_filter", "L_WARN", P), ("syslog_level_filter", -1, P)])
    from routescript.core.log import LogSettings
    settings = LogSettings.of(cfg)
    assert (settings.stderr_filter, settings.syslog_filter) == (1, -1)
    with pytest.raises(ConfigError, match="out of range"):
        apply_globals([("syslog_level_filter", 9, P)])


def test_resource_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, tuple[int, int]]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: calls.append((which, limits)))
    cfg, _ = apply_globals([("open_files_limit", 2048, P), ("disable_core_dump", "yes", P)])
    assert set_resource_limits(cfg) == ["open files limit raised from 1024 to 2048 (open_files_limit)",
                                        "core dumps disabled (disable_core_dump)"]
    assert calls == [(resource.RLIMIT_NOFILE, (2048, 4096)), (resource.RLIMIT_CORE, (0, 0))]
    calls.clear()
    assert set_resource_limits(apply_globals([("open_files_limit", 512, P)])[0]) == []   # already above
    assert calls == []

    def refuse(which: int, limits: tuple[int, int]) -> None:
        raise ValueError("not allowed to raise maximum limit")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    with pytest.raises(ConfigError) as info:
        set_resource_limits(apply_globals([("open_files_limit", 100000, P)])[0])
    assert str(info.value).startswith("c.cfg:7:1: open_files_limit = 100000: cannot raise") \
        and "LimitNOFILE=" in str(info.value)


class _Relay:
    def __init__(self) -> None:
        self.forwarded: list[int] = []

    def forward_reply(self, response: Any) -> bool:
        self.forwarded.append(response.status)
        return True


class _Layers:
    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.transport: Any = None
        self.transactions: Any = None
        self.relay = _Relay()

    def is_myself(self, host: str, port: int | None = None) -> bool:
        return (host, port) == ("127.0.0.1", 5060)


def _stray(via_host: str) -> Any:
    return parse_message((f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {via_host}:5060;branch=z9hG4bKsl-1\r\n"
                          "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK2\r\nFrom: <sip:x@y>;tag=1\r\n"
                          "To: <sip:a@b>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
                          "Content-Length: 0\r\n\r\n").encode())


@pytest.mark.parametrize(("params", "forwarded"), [
    ([], [200, 200]),
    ([("check_via", "yes", P)], [200]),                # only the one whose top Via is ours
    ([("disable_stateless_fwd", "yes", P)], []),
])
def test_stray_responses_check_via_and_disable_stateless_fwd(params: list[Any], forwarded: list[int]) -> None:
    layers = _Layers(apply_globals(params)[0])
    counters = CoreCounters()
    d = MessageDispatcher(layers, Routes(), Replier(layers, counters), counters)  # type: ignore[arg-type]
    d._stray_response(_stray("127.0.0.1"))
    d._stray_response(_stray("198.51.100.7"))
    assert layers.relay.forwarded == forwarded


class _Takes:
    db_url_from_default = "db_url"


class _DoesNot:
    db_url_from_default = None


def test_db_default_url_is_the_db_url_of_modules_that_take_it() -> None:
    cfg, _ = apply_globals([("db_default_url", "sqlite:///tmp/x.db", P)])
    classes: Any = {"usrloc": (_Takes, None), "auth_db": (_Takes, None), "presence": (_DoesNot, None)}
    own = [ModParam("auth_db", "db_url", "sqlite:///tmp/auth.db", ("c.cfg", 9, 1))]
    assert default_db_urls(cfg, classes, own) == [ModParam("usrloc", "db_url", "sqlite:///tmp/x.db", P)]
    assert default_db_urls(apply_globals([])[0], classes, []) == []


def test_db_default_url_reaches_usrloc_through_the_loader(tmp_path: Path) -> None:
    from routescript.core.server import Server

    path = tmp_path / "r.cfg"
    path.write_text(f'db_default_url = "sqlite:///{tmp_path}/ul.db"\nloadmodule "usrloc.so"\n'
                    'modparam("usrloc", "db_mode", 1)\nroute { exit; }\n')
    server = Server()
    server.load(str(path))
    assert server.modules.get("usrloc").param("db_url") == f"sqlite:///{tmp_path}/ul.db"


def test_disable_503_translation_reaches_tm(tmp_path: Path) -> None:
    from routescript.core.server import Server

    path = tmp_path / "t.cfg"
    path.write_text('disable_503_translation = yes\nloadmodule "tm.so"\nroute { exit; }\n')
    server = Server()
    server.load(str(path))
    assert server.modules.get("tm").settings.translate_503 is False


def test_the_loader_compiles_with_the_script_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import routescript.script as script_pkg
    from routescript.core.server import Server

    seen: list[dict[str, Any]] = []
    real = script_pkg.compile_script

    def spy(ast: Any, registry: Any, **options: Any) -> Any:
        seen.append(options)
        return real(ast, registry, **options)

    monkeypatch.setattr(script_pkg, "compile_script", spy)
    path = tmp_path / "a.cfg"
    path.write_text('enable_asserts = yes\nmax_while_loops = 50\nroute { assert(1 == 1, "one"); exit; }\n')
    Server().load(str(path))
    assert seen == [{"max_while_loops": 50, "enable_asserts": True, "abort_on_assert": False}]


def test_abort_on_assert_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from routescript.script import runtime
    from routescript.script.pos import Pos

    aborted: list[bool] = []
    monkeypatch.setattr(os, "abort", lambda: aborted.append(True))
    with pytest.raises(runtime.ExitScript):
        runtime.assert_failed(Pos("a.cfg", 1, 1), "no")
    assert aborted == []
    with pytest.raises(runtime.ExitScript):                 # (the real os.abort() does not return)
        runtime.assert_failed(Pos("a.cfg", 1, 1), "no", True)
    assert aborted == [True]
