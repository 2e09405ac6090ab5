"""include_file / import_file: relative to the including file, positions name the included file."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.script import ScriptError, ast, compile_script, parse_file
from routescript.script.context import MsgContext
from routescript.script.pos import Pos
from routescript.script.registry import Registry


def test_top_level_include_relative_to_including_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mods.cfg").write_text('loadmodule "sl.so"\ninclude_file "routes.cfg"\n')
    (tmp_path / "sub" / "routes.cfg").write_text("\n\nroute[relay] {\n  exit;\n}\n")
    main = tmp_path / "main.cfg"
    main.write_text('log_level=3\ninclude_file "sub/mods.cfg"\nroute { route(relay); }\n')
    s = parse_file(main)
    assert s.loadmodules == [ast.LoadModule("sl.so", Pos(str(tmp_path / "sub" / "mods.cfg"), 1, 1))]
    relay = next(r for r in s.routes if r.name == "relay")
    assert relay.pos == Pos(str(tmp_path / "sub" / "routes.cfg"), 3, 1)
    assert relay.body.stmts[0].pos == Pos(str(tmp_path / "sub" / "routes.cfg"), 4, 3)
    assert s.files == (str(main), str(tmp_path / "sub" / "mods.cfg"), str(tmp_path / "sub" / "routes.cfg"))


async def test_include_inside_a_route_block(tmp_path: Path, registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "checks.cfg").write_text('if (ok()) {\n  log_it("from include");\n}\n')
    main = tmp_path / "main.cfg"
    main.write_text('route {\n  include_file "checks.cfg"\n  log_it("main");\n}\n')
    s = parse_file(main)
    stmts = s.routes[0].body.stmts
    assert isinstance(stmts[0], ast.If) and stmts[0].pos.file == str(tmp_path / "checks.cfg")
    cs = compile_script(s, registry)
    await cs.run("request", None, MsgContext())
    assert [c[1] for c in calls.log if c[0] == "log_it"] == ["from include", "main"]


def test_syntax_error_in_included_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "inc.cfg").write_text('route[x] {\n  f(1)\n}\n')
    main = tmp_path / "main.cfg"
    main.write_text('include_file "inc.cfg"\n')
    with pytest.raises(ScriptError) as info:
        parse_file(main)
    (d,) = info.value.diagnostics
    assert str(d).startswith(f"{tmp_path / 'inc.cfg'}:2:7: expected ';' after f(...)")


def test_missing_include_is_an_error_import_is_a_warning(tmp_path: Path) -> None:
    main = tmp_path / "main.cfg"
    main.write_text('import_file "optional.cfg"\nroute { exit; }\n')
    s = parse_file(main)
    (w,) = s.warnings
    assert w.severity == "warning" and w.pos == Pos(str(main), 1, 1) and "optional.cfg" in w.message
    main.write_text('route { exit; }\ninclude_file "missing.cfg"\n')
    with pytest.raises(ScriptError) as info:
        parse_file(main)
    (d,) = info.value.diagnostics
    assert (d.pos.line, d.pos.col) == (2, 1) and "cannot read" in d.message


def test_include_cycle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.cfg").write_text('include_file "b.cfg"\n')
    (tmp_path / "b.cfg").write_text('log_level=1\ninclude_file "a.cfg"\n')
    with pytest.raises(ScriptError) as info:
        parse_file(tmp_path / "a.cfg")
    (d,) = info.value.diagnostics
    assert d.pos == Pos(str(tmp_path / "b.cfg"), 2, 1) and "includes itself" in d.message
