"""Every MI command declares where it runs with worker processes (`workers=`, docs/workers.md section 5),
and the registry routes by that declaration: "supervisor" commands run where the registry is, the others
go through `forward` with their declaration."""

from __future__ import annotations

import pkgutil
from typing import Any

import pytest

import routescript.modules
from routescript.core.loader import find_module_class
from routescript.core.module import MI_PLACEMENTS, MICommand, Module, mi_command
from routescript.mi.core_cmds import CoreMI
from routescript.mi.registry import MIRegistry


def _declarations(cls: type[Module]) -> list[tuple[str, Any, tuple[str, ...]]]:
    """(name, workers, key) of every @mi_command of the class and its bases."""
    out = []
    for klass in cls.__mro__:
        for value in vars(klass).values():
            for tag in getattr(value, "__dict__", {}).get("_rs_mi", []) if callable(value) else ():
                name, *_rest, workers, key = tag
                out.append((name, workers, key))
    return out


def _every_module_class() -> list[type[Module]]:
    classes: list[type[Module]] = [CoreMI]
    for info in pkgutil.iter_modules(routescript.modules.__path__):
        cls = find_module_class(info.name)
        assert cls is not None, f"module package {info.name} has no MODULE"
        classes.append(cls)
    return classes


def test_every_command_of_every_module_declares_where_it_runs() -> None:
    seen = 0
    undeclared = []
    for cls in _every_module_class():
        for name, workers, key in _declarations(cls):
            seen += 1
            if workers not in MI_PLACEMENTS:
                undeclared.append(f"{cls.__name__}.{name}")
            assert not key or workers == "concat", name
    assert undeclared == [], f"MI commands without workers=: {undeclared}"
    assert seen >= 27   # the core's 19, httpd's and presence's: the walk did find them


@pytest.mark.parametrize(("name", "where"), [
    ("ps", "supervisor"), ("get_statistics", "supervisor"), ("reload_routes", "supervisor"),
    ("reset_statistics", "each"), ("event_subscribe", "each"), ("pres_expose", "each"),
    ("pres_phtable_list", "concat"), ("subs_phtable_list", "concat"), ("list_tcp_conns", "concat"),
    ("refreshWatchers", "one"), ("raise_event", "one"),
])
def test_the_placements_docs_workers_md_names(name: str, where: str) -> None:
    found = {n: w for cls in _every_module_class() for n, w, _k in _declarations(cls)}
    assert found[name] == where


def test_a_bad_declaration_is_refused_where_it_is_written() -> None:
    with pytest.raises(ValueError, match="workers='everywhere'"):
        mi_command("x", workers="everywhere")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only with workers=\"concat\""):
        mi_command("x", workers="each", key=("id",))


class _Mod(Module):
    name = "placed"

    @mi_command("here", workers="supervisor")
    def here(self) -> str:
        return "ran here"

    @mi_command("there", workers="concat", key=("id",))
    def there(self, n: int) -> str:
        return "not here"


async def test_the_registry_forwards_all_but_supervisor_commands_with_their_declaration() -> None:
    from routescript.core.server import Server

    reg = MIRegistry(Server())
    reg.add_all(_Mod(Server(), {}).mi_commands())
    forwarded: list[tuple[MICommand, Any]] = []

    async def forward(cmd: MICommand, params: Any) -> Any:
        forwarded.append((cmd, params))
        return ["from the workers"]

    reg.forward = forward
    assert await reg.dispatch("here") == "ran here"
    assert await reg.dispatch("there", {"n": 3}) == ["from the workers"]
    assert [(c.name, c.workers, c.key, p) for c, p in forwarded] == [("there", "concat", ("id",), {"n": 3})]
    with pytest.raises(Exception, match="Invalid params"):   # checked before forwarding
        await reg.dispatch("there", {"m": 3})
    assert len(forwarded) == 1
