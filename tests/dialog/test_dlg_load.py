"""dialog at load time: the script functions and pseudo-variables load, what is not built is refused with
its reason, and the Python API (bind_dialog) sees created dialogs and state changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from routescript.core.server import LoadError, Server
from routescript.modules.dialog import DlgState, bind_dialog
from routescript.modules.dialog.core import DlgEvent
from routescript.modules.dialog.module import DialogModule

HEAD = ('loadmodule "sl.so"\nloadmodule "sipmsgops.so"\nloadmodule "tm.so"\nloadmodule "rr.so"\n'
        'loadmodule "dialog.so"\n'
        'modparam("dialog", "profiles_with_value", "caller")\n'
        'modparam("dialog", "profiles_no_value", "in;out")\n')


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


def test_a_dialog_script_loads_without_warnings(tmp_path: Path) -> None:
    server = load(tmp_path, 'route {\n  if (has_totag()) {\n'
                  '    if (loose_route() || match_dialog("DID_FALLBACK")) {\n'
                  '    if (validate_dialog() == -1) xlog("bad $DLG_id $DLG_dir\\n"); t_relay(); }\n'
                  '    exit; }\n'
                  '  get_profile_size("caller", $fU, $var(n));\n  get_profile_size("in", , $var(m));\n'
                  '  create_dialog("B"); $DLG_timeout = 30; $dlg_val(x) = "y"; store_dlg_value("a", "b");\n'
                  '  fetch_dlg_value("a", $var(a)); set_dlg_profile("caller", $fU); set_dlg_profile("in");\n'
                  '  if (is_in_profile("caller", $fU)) unset_dlg_profile("caller", $fU);\n'
                  '  set_dlg_flag(3); if (is_dlg_flag_set(3)) reset_dlg_flag(3);\n'
                  '  xlog("$DLG_lifetime $DLG_count $DLG_did $DLG_flags $DLG_end_reason\\n");\n'
                  '  record_route(); t_relay();\n}\n')
    module = server.modules.get("dialog")
    assert isinstance(module, DialogModule) and module.profiles.with_value == {"caller"}
    assert module.profiles.no_value == {"in", "out"}
    assert server.loaded is not None and server.loaded.warnings == []
    assert bind_dialog(server) is module.api


@pytest.mark.parametrize(("call", "why"), [('create_dialog("options-ping-caller")', "not supported"),
                                           ('create_dialog("reinvite-ping-callee")', "not supported"),
                                           ('match_dialog("SOMETIMES")', "DID_ONLY"),
                                           ('dlg_on_hangup("r")', "not built"),
                                           ('get_dialog_info("a", $avp(b), "c", "d", $var(n))', "not built")])
def test_what_is_not_built_is_refused(tmp_path: Path, call: str, why: str) -> None:
    found = errors(tmp_path, f"route {{\n  {call};\n}}\n")
    assert found and any(why in line for line in found), found


@pytest.mark.parametrize(("param", "value", "why"), [
    ("db_mode", "1", "needs"), ("db_mode", "4", "shutdown"), ("table_name", '"dlg"', "not supported yet"),
    ("delete_delay", "5", "not supported yet"), ("vars_column", '"v"', "column names"),
    ("dlg_match_mode", "3", "DID_NONE"), ("default_timeout", "0", "positive"),
    ("profiles_with_value", '"shared/s"', "shared profiles"),
    ("dialog_replication_cluster", "1", "not supported yet")])
def test_parameters_not_built_are_refused(tmp_path: Path, param: str, value: str, why: str) -> None:
    found = errors(tmp_path, f'modparam("dialog", "{param}", {value})\nroute {{ exit; }}\n')
    assert found and any(why in line for line in found), found


def test_api_callbacks_see_snapshots(tmp_path: Path) -> None:
    server = load(tmp_path, "route { exit; }\n")
    module = server.modules.get("dialog")
    assert isinstance(module, DialogModule)
    api = bind_dialog(server)
    assert api is not None
    seen: list[tuple[str, DlgState, DlgState, Any]] = []
    api.on_state_changed(lambda info, old, new, ctx: seen.append((info.dlg_id, old, new, info.end_reason)))

    def broken(*_: Any) -> None:
        raise RuntimeError("a consumer's bug")
    api.on_state_changed(broken)      # logged, never raised into the dialog module
    dlg = module.table.create(call_id="c", from_uri="sip:a@x", from_tag="f", to_uri="sip:b@x",
                              req_uri="sip:b@x", from_header="<sip:a@x>;tag=f", to_header="<sip:b@x>",
                              now=1.0, timeout=10)
    api.store_value(dlg.dlg_id, "k", "v")
    api.set_flag(dlg.dlg_id, 1 << 16)
    assert api.fetch_value(dlg.dlg_id, "k") == "v" and api.fetch_value("0:0", "k") is None
    module.changed(module.table.event(dlg, DlgEvent.RPL2XX, 2.0), None)
    [info] = list(api.dialogs())
    assert info.state is DlgState.CONFIRMED_NA and info.values == {"k": "v"} and info.flags == 1 << 16
    module.changed(module.table.event(dlg, DlgEvent.BYE, 3.0, reason="bye-caller"), None)
    assert seen == [(dlg.dlg_id, DlgState.UNCONFIRMED, DlgState.CONFIRMED_NA, None),
                    (dlg.dlg_id, DlgState.CONFIRMED_NA, DlgState.DELETED, "bye-caller")]
    assert list(api.dialogs()) == []
    assert server.statistics.get("dialog:active_dialogs").value == 0  # type: ignore[union-attr]


def test_bind_dialog_without_the_module(tmp_path: Path) -> None:
    path = tmp_path / "s.cfg"
    path.write_text('loadmodule "sl.so"\nroute { exit; }\n')
    server = Server()
    server.load(str(path))
    assert bind_dialog(server) is None


def test_the_parts_exports_are_the_modules(tmp_path: Path) -> None:
    """DialogModule is composed of parts (creation, matching, values, pvars, profiles, mi): every script
    function, pseudo-variable and MI command a part declares is served once, bound to that part."""
    path = tmp_path / "s.cfg"
    path.write_text('loadmodule "sl.so"\nloadmodule "tm.so"\nloadmodule "dialog.so"\nroute { exit; }\n')
    server = Server()
    server.load(str(path))
    module = server.modules.get("dialog")
    assert isinstance(module, DialogModule)
    functions = {spec.name: spec for spec in module.functions()}
    assert len(functions) == len(module.functions()) and set(functions) == DialogModule.function_names()
    assert {"create_dialog", "match_dialog", "set_dlg_profile", "store_dlg_value"} <= set(functions)
    assert getattr(functions["create_dialog"].impl, "__self__", None) is module.creation
    assert getattr(functions["set_dlg_profile"].impl, "__self__", None) is module.profiles
    pvars = {spec.name: spec for spec in module.pvars()}
    assert set(pvars) == DialogModule.pvar_names()
    assert getattr(pvars["DLG_timeout"].setter, "__self__", None) is module.pvars_part
    assert getattr(pvars["dlg_val"].setter, "__self__", None) is module.values
    commands = {c.name: c for c in module.mi_commands()}
    assert set(commands) == DialogModule.mi_command_names()
    assert getattr(commands["dlg_list"].impl, "__self__", None) is module.mi
