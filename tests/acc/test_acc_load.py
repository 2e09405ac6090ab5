"""acc at load time: what the script asks is checked at its file:line:col (unknown types and flags, the
not-built AAA/evi backends and multi-leg functions, "db" without db_url, an $acc_extra tag extra_fields
does not define, renamed columns), and the cdr flag without the dialog module stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.core.module import ConfigError
from routescript.core.server import LoadError, Server
from routescript.modules.acc import AccModule

HEAD = 'loadmodule "sl.so"\nloadmodule "tm.so"\nloadmodule "acc.so"\n'


def load(tmp_path: Path, text: str, head: str = HEAD) -> Server:
    path = tmp_path / "s.cfg"
    path.write_text(head + text)
    server = Server()
    server.load(str(path))
    return server


def errors(tmp_path: Path, text: str, head: str = HEAD) -> list[str]:
    path = tmp_path / "s.cfg"
    path.write_text(head + text)
    with pytest.raises(LoadError) as info:
        Server().load(str(path))
    return [str(d).splitlines()[0] for d in info.value.diagnostics]


def test_a_typical_accounting_script_loads(tmp_path: Path) -> None:
    server = load(tmp_path, 'loadmodule "dialog.so"\nmodparam("acc", "db_url", "sqlite:///tmp/x.db")\n'
                  'modparam("acc", "extra_fields", "db: ua->user_agent")\n'
                  'modparam("acc", "extra_fields", "log: ua")\n'
                  'route {\n  $acc_extra(ua) = $ua;\n'
                  '  do_accounting("log|db", "cdr|missed|failed", "my_acc");\n'
                  '  drop_accounting("log", "missed");\n  acc_log_request("403 Forbidden");\n'
                  '  acc_db_request("480 Gone", "missed_calls");\n  t_relay();\n}\n'
                  'failure_route[f] { do_accounting("db", "missed"); drop_accounting(); }\n')
    acc = server.modules.get("acc")
    assert isinstance(acc, AccModule) and acc.cdr_used
    assert acc.db_names == (("ua", "user_agent"),) and acc.log_names == (("ua", "ua"),)


def test_bad_arguments_and_unbuilt_parts_are_refused_where_written(tmp_path: Path) -> None:
    found = errors(tmp_path, 'modparam("acc", "extra_fields", "log: ua")\n'
                   'route {\n  do_accounting("radius");\n  do_accounting("aaa");\n'
                   '  do_accounting("log", "cdrs");\n  do_accounting("db");\n  $acc_extra(nope) = 1;\n'
                   '  acc_new_leg();\n  acc_evi_request("200");\n  do_accounting("log", "", "bad-table");\n'
                   '  do_accounting($var(t));\n}\n'
                   'onreply_route[r] { do_accounting("log"); }\n')
    text = "\n".join(found)
    for line, why in ((6, "invalid accounting type 'radius'"),
                      (7, "AAA (RADIUS/Diameter) accounting is not built"),
                      (8, "invalid accounting flag 'cdrs'"), (9, "needs modparam(\"acc\", \"db_url\""),
                      (10, "no such tag in extra_fields (ua)"), (11, "multi-leg accounting"),
                      (12, "event interface accounting is not built"), (13, "letters, digits and '_' only"),
                      (14, "must be written out"), (16, "cannot be used in onreply_route")):
        assert any(f"s.cfg:{line}:" in e and why in e for e in found), (line, why, text)


@pytest.mark.parametrize(("param", "value", "why"), [
    ("acc_callid_column", '"call_id"', "keep OpenSIPS's column names"),
    ("leg_fields", '"log: a"', "multi-leg accounting ($acc_leg) is not built"),
    ("multi_leg_info", '"a=$avp(a)"', "leg_fields"),
    ("aaa_url", '"radius:/etc/r.conf"', "AAA accounting is not built"),
    ("log_facility", '"LOG_NOWHERE"', "invalid log facility"),
    ("extra_fields", '"db: a->b"', "no db_url"),
    ("db_table_acc", '"my-acc"', "letters, digits and '_' only"),
])
def test_modparams_not_built_or_wrong_are_refused(tmp_path: Path, param: str, value: str, why: str) -> None:
    found = errors(tmp_path, f'modparam("acc", "{param}", {value})\nroute {{ exit; }}\n')
    assert any(why in e for e in found), found


@pytest.mark.asyncio
async def test_the_cdr_flag_without_the_dialog_module_stops_the_start(tmp_path: Path) -> None:
    server = load(tmp_path, 'route {\n  do_accounting("log", "cdr");\n}\n')
    acc = server.modules.get("acc")
    assert isinstance(acc, AccModule)
    with pytest.raises(ConfigError, match="needs the dialog module loaded"):
        await acc.start()
