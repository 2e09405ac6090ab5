"""Module.refused: a module refuses, at load time, functions that cannot work in its configuration - an
error at every call's file:line:col; on reload_routes the script is rejected and the old one kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import routescript.core.loader as loader
from routescript.core.module import Module, Param, script_function
from routescript.core.server import LoadError, Server


class PickyModule(Module):
    name = "picky"
    params = (Param("ready", int, 0),)

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        if not self.param("ready"):
            self.refused = {"picky_work": "picky is not ready: set modparam(\"picky\", \"ready\", 1)"}

    @script_function("picky_work")
    def picky_work(self, ctx: Any) -> int:
        return 1

    @script_function("picky_other")
    def picky_other(self, ctx: Any) -> int:
        return 1


@pytest.fixture(autouse=True)
def picky(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loader.find_module_class
    monkeypatch.setattr(loader, "find_module_class", lambda n: PickyModule if n == "picky" else real(n))


def cfg(tmp_path: Path, ready: int, body: str) -> Path:
    path = tmp_path / "picky.cfg"
    path.write_text(f'loadmodule "picky.so"\nmodparam("picky", "ready", {ready})\nroute {{\n{body}}}\n')
    return path


def test_every_call_refused_with_position(tmp_path: Path) -> None:
    path = cfg(tmp_path, 0, "    picky_other();\n    picky_work();\n    if (1) { picky_work(); }\n")
    with pytest.raises(LoadError) as info:
        Server().load(str(path))
    texts = [str(d) for d in info.value.diagnostics]
    assert len(texts) == 2
    assert texts[0].startswith(f"{path}:5:5: picky_work(): picky is not ready")
    assert texts[1].startswith(f"{path}:6:14: picky_work(): picky is not ready")


def test_not_refused_when_configured_or_not_called(tmp_path: Path) -> None:
    Server().load(str(cfg(tmp_path, 1, "    picky_work();\n")))
    Server().load(str(cfg(tmp_path, 0, "    picky_other();\n")))


async def test_reload_with_a_refused_call_keeps_the_old_script(tmp_path: Path) -> None:
    path = cfg(tmp_path, 0, "    picky_other();\n")
    server = Server()
    server.load(str(path))
    old = server.script
    path.write_text(path.read_text().replace("picky_other", "picky_work"))
    diags = await server.reload_routes()
    assert [d.severity for d in diags] == ["error"] and "picky is not ready" in str(diags[0])
    assert server.script is old
