"""The full check (`Server.load`, what `routescript check CFG` and `run` share): every problem in one run,
in file order - each module routescript lacks once (its modparams one note, not errors), each unknown
function naming the OpenSIPS module that exports it, and what `run` would refuse at start-up (a db_url
scheme) refused here in the same words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import routescript.core.loader as loader
from routescript.core.module import ConfigError, Module, Param, script_function
from routescript.core.server import LoadError, Server
from routescript.script.opensips_functions import OPENSIPS_FUNCTIONS, OPENSIPS_MODULES

MYSQL = "mysql://opensips:opensipsrw@localhost/opensips"
ORACLE = "oracle://opensips:opensipsrw@localhost/opensips"   # a back end routescript does not have

# A registrar + proxy + presence server, as a 3.x deployment writes it.
DEPLOYMENT = f"""\
log_level = 3
socket = udp:127.0.0.1:5060

loadmodule "db_mysql.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "dispatcher.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"
loadmodule "uac.so"
loadmodule "rtpproxy.so"

modparam("tm", "fr_timeout", 5)
modparam("usrloc", "db_url", "{MYSQL}")
modparam("usrloc", "db_mode", 2)
modparam("auth_db", "db_url", "{MYSQL}")
modparam("auth_db", "calculate_ha1", 1)
modparam("dispatcher", "ds_ping_interval", 10)
modparam("presence", "db_url", "sqlite://:memory:")
modparam("uac", "restore_mode", "auto")

route {{
    if (!mf_process_maxfwd_header(10)) {{
        sl_send_reply(483, "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) t_relay();
        exit;
    }}
    if (is_method("REGISTER")) {{
        if (!www_authorize("", "subscriber")) {{
            www_challenge("", "auth");
            exit;
        }}
        save("location");
        exit;
    }}
    if (is_method("PUBLISH|SUBSCRIBE")) route(presence);
    if (!lookup("location")) {{
        sl_send_reply(404, "Not Found");
        exit;
    }}
    ds_select_dst("1", "4");
    rtpproxy_offer();
    record_route();
    t_on_failure("missed");
    t_relay();
}}

route[presence] {{
    if (!t_newtran()) {{ sl_reply_error(); exit; }}
    if (is_method("PUBLISH")) handle_publish();
    else handle_subscribe();
    exit;
}}

failure_route[missed] {{
    if (t_was_cancelled()) exit;
}}
"""


def load_errors(tmp_path: Path, text: str, name: str = "s.cfg") -> tuple[Path, list[str]]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LoadError) as info:
        Server().load(str(path))
    return path, [str(d).splitlines()[0] for d in info.value.diagnostics]


def test_deployment_script_every_problem_in_one_run(tmp_path: Path) -> None:
    path, errors = load_errors(tmp_path, DEPLOYMENT)
    p = str(path)
    assert errors == [
        (f'{p}:15:1: module \'dispatcher\' (loadmodule "dispatcher.so") is not implemented by routescript '
        "(its 1 modparam not checked)"),
        (f'{p}:18:1: module \'uac\' (loadmodule "uac.so") is not implemented by routescript '
        "(its 1 modparam not checked)"),
        (f'{p}:19:1: module \'rtpproxy\' (loadmodule "rtpproxy.so") is not implemented by '
        "routescript"),
        f"{p}:52:5: ds_select_dst() is a dispatcher function, and routescript does not implement dispatcher",
        (f"{p}:53:5: rtpproxy_offer() is a rtpproxy function, and routescript does not implement "
        "rtpproxy"),
    ]
    assert not any("modparam" in e and "not loaded" in e for e in errors)
    assert len(errors) == len(set(errors))


def test_errors_are_in_file_order_across_kinds(tmp_path: Path) -> None:
    path, errors = load_errors(tmp_path, 'loadmodule "tm.so"\nmodparam("tm", "fr_timeout", "soon")\n'
                                         'loadmodule "dispatcher.so"\nroute {\n    ds_select_dst("1", "0");\n'
                                         '    nosuch_fn();\n}\n')
    assert [e.split(": ", 1)[0] for e in errors] == [f"{path}:2:1", f"{path}:3:1", f"{path}:5:5",
                                                     f"{path}:6:5"]
    assert "expects an integer" in errors[0]
    assert errors[3].endswith("unknown function nosuch_fn() (is its module loaded?)")


def test_not_an_opensips_module_reads_as_a_path_problem(tmp_path: Path) -> None:
    path, errors = load_errors(tmp_path, 'loadmodule "/opt/mods/nosuch.so"\n'
                                         'modparam("nosuch", "x", 1)\nroute { exit; }\n')
    assert errors == [(f'{path}:1:1: loadmodule: module \'nosuch\' not found (from "/opt/mods/nosuch.so"): '
                      "neither routescript nor OpenSIPS has a module of that name (its 1 modparam not "
                      "checked)")]


def test_function_of_a_module_not_loaded(tmp_path: Path) -> None:
    path, errors = load_errors(tmp_path, 'loadmodule "sl.so"\nroute {\n    t_relay();\n'
                                         '    ds_select_dst("1", "0");\n}\n')
    assert errors == [f'{path}:3:5: t_relay() is a tm function: loadmodule "tm.so"',
                      (f'{path}:4:5: ds_select_dst() is a dispatcher function: loadmodule "dispatcher.so" '
                      "- a module routescript does not implement")]


def test_a_refused_modparam_does_not_make_its_module_refuse_functions(tmp_path: Path) -> None:
    # presence falls back to library mode when its db_url is refused: its handle_publish() refusal
    # would follow from the first error, so it is not said.
    path, errors = load_errors(tmp_path, f'loadmodule "sl.so"\nloadmodule "tm.so"\nloadmodule "presence.so"\n'
                                         f'modparam("presence", "db_url", "{ORACLE}")\n'
                                         'route {\n    handle_publish();\n}\n')
    assert errors == [(f"{path}:4:1: modparam(\"presence\", \"db_url\"): unsupported database URL scheme "
                      "'oracle' (use sqlite://, postgres:// or mysql://)")]


@pytest.mark.parametrize("module", ["presence", "xcap", "presence_xml"])
def test_db_url_scheme_refused_at_load(tmp_path: Path, module: str) -> None:
    loads = 'loadmodule "sl.so"\nloadmodule "tm.so"\nloadmodule "presence.so"\n'
    if module != "presence":
        loads += f'loadmodule "{module}.so"\n'
    _path, errors = load_errors(tmp_path, loads + f'modparam("{module}", "db_url", "{ORACLE}")\n'
                                         "route { exit; }\n")
    assert len(errors) == 1
    assert errors[0].endswith(f"modparam(\"{module}\", \"db_url\"): unsupported database URL scheme "
                              "'oracle' (use sqlite://, postgres:// or mysql://)")


def test_good_db_urls_and_library_mode_still_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.cfg"
    for url in ("sqlite://:memory:", "postgres://u:p@127.0.0.1:1/db", MYSQL, ""):
        path.write_text('loadmodule "sl.so"\nloadmodule "tm.so"\nloadmodule "presence.so"\n'
                        f'modparam("presence", "db_url", "{url}")\nroute {{ exit; }}\n')
        Server().load(str(path))


def test_function_table_covers_the_common_modules() -> None:
    expected = {"t_on_failure": "tm", "sl_send_reply": "sl", "record_route": "rr",
                "mf_process_maxfwd_header": "maxfwd", "is_method": "sipmsgops", "save": "registrar",
                "lookup": "registrar", "www_authorize": "auth_db", "www_challenge": "auth",
                "create_dialog": "dialog", "dialoginfo_set": "pua_dialoginfo", "handle_publish": "presence",
                "nat_uac_test": "nathelper", "rtpproxy_offer": "rtpproxy", "ds_select_dst": "dispatcher",
                "uac_replace_from": "uac", "do_accounting": "acc", "check_source_address": "permissions",
                "avp_db_query": "avpops", "sleep": "cfgutils", "send_reply": "signaling",
                "do_routing": "drouting"}
    for name, module in expected.items():
        assert module in OPENSIPS_FUNCTIONS[name], name
    for module in ("db_mysql", "mi_fifo", "httpd", "presence_xml", "textops", "uri"):
        assert module in OPENSIPS_MODULES
    assert not any("bind" in n for n in OPENSIPS_FUNCTIONS)   # C APIs, not script functions


def test_mi_fifo_in_a_missing_directory_refused_at_load(tmp_path: Path) -> None:
    fifo = tmp_path / "no" / "such" / "fifo"
    path, errors = load_errors(tmp_path, 'loadmodule "mi_fifo.so"\n'
                                         f'modparam("mi_fifo", "fifo_name", "{fifo}")\nroute {{ exit; }}\n')
    assert errors == [(f"{path}:1:1: module 'mi_fifo': cannot create FIFO {fifo}: No such file or directory "
                       f"(no directory {fifo.parent})")]


class _Broken(Module):
    """A module that cannot be made, and one whose check() refuses: both said in the same run."""

    name = "broken"

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        raise ConfigError("broken cannot start here")

    @script_function("broken_work")
    def broken_work(self, ctx: Any) -> int:
        return 1


class _Picky(Module):
    name = "picky"
    params = (Param("level", int, 0),)

    def check(self) -> None:
        if self.param("level") < 1:
            raise ConfigError("level must be at least 1")


@pytest.fixture
def test_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loader.find_module_class
    extra = {"broken": _Broken, "picky": _Picky}
    monkeypatch.setattr(loader, "find_module_class", lambda n: extra.get(n) or real(n))


@pytest.mark.usefixtures("test_modules")
def test_every_module_failure_in_one_run_and_its_functions_not_reported_again(tmp_path: Path) -> None:
    path, errors = load_errors(tmp_path, 'loadmodule "broken.so"\nloadmodule "picky.so"\n'
                                         'loadmodule "dispatcher.so"\nroute {\n    broken_work();\n}\n')
    assert errors == [f"{path}:1:1: module 'broken': broken cannot start here",
                      f"{path}:2:1: module 'picky': level must be at least 1",
                      (f"{path}:3:1: module 'dispatcher' (loadmodule \"dispatcher.so\") is not implemented "
                      "by routescript")]


@pytest.mark.usefixtures("test_modules")
def test_a_refused_modparam_skips_its_module_check(tmp_path: Path) -> None:
    # level = "high" is refused; check() would then judge the default 0: not said
    path, errors = load_errors(tmp_path, 'loadmodule "picky.so"\nmodparam("picky", "level", "high")\n'
                                         "route { exit; }\n")
    assert errors == [(f'{path}:2:1: modparam("picky", "level"): parameter \'level\' expects an integer, '
                      'got "high"')]


def test_warnings_come_with_the_errors_in_file_order(tmp_path: Path) -> None:
    path, errors = load_errors(tmp_path, 'loadmodule "sl.so"\nloadmodule "dispatcher.so"\n'
                                         'loadmodule "sl.so"\nroute { exit; }\n')
    assert errors[0] == (f"{path}:2:1: module 'dispatcher' (loadmodule \"dispatcher.so\") is not implemented "
                         "by routescript")
    assert errors[1].startswith(f'{path}:3:1: warning: module "sl" is loaded already (line 1)')
    assert len(errors) == 2
