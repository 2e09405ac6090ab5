"""loadmodule / modparam resolution: names, paths, regex module names, errors at exact positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.core.loader import (
    LoadModule,
    ModParam,
    apply_modparams,
    find_module_class,
    instantiate,
    load_modules,
    module_name,
)
from routescript.core.module import ConfigError, Module, Param


@pytest.mark.parametrize("path", ["sl.so", "sl", "/usr/lib64/opensips/modules/sl.so", "modules/sl.so"])
def test_module_name_forms(path: str) -> None:
    assert module_name(path) == "sl"
    assert find_module_class(module_name(path)).name == "sl"


def test_unknown_module_at_its_position() -> None:
    with pytest.raises(ConfigError) as ei:
        load_modules([LoadModule("sl", "sl.so", ("a.cfg", 1, 1)),
                      LoadModule("nosuch", "nosuch.so", ("a.cfg", 2, 1))])
    assert ei.value.pos == ("a.cfg", 2, 1)
    assert "nosuch" in ei.value.message
    assert find_module_class("../etc") is None


def test_modparam_regex_and_list_forms() -> None:
    classes = load_modules([LoadModule(n, n) for n in ("tm", "maxfwd", "db_sqlite", "db_postgres")])
    values = apply_modparams(classes, [
        ModParam("tm", "fr_timeout", "10"),
        ModParam("db_.*", "exec_query_threshold", 1),     # regex: both db modules
        ModParam("TM;maxfwd", "max_limit", 20),           # list; case-insensitive; only maxfwd has it
    ])
    assert values["tm"]["fr_timeout"] == 10
    assert values["db_sqlite"]["exec_query_threshold"] == values["db_postgres"]["exec_query_threshold"] == 1
    assert values["maxfwd"]["max_limit"] == 20
    assert values["tm"]["fr_inv_timeout"] == 120           # defaults filled in


@pytest.mark.parametrize("line,needle", [
    (ModParam("presence_nope", "x", 1, ("m.cfg", 9, 1)), "not loaded"),
    (ModParam("tm", "no_such_param", 1, ("m.cfg", 9, 1)), "'no_such_param' not found in module tm"),
    (ModParam("tm", "fr_timeout", "soon", ("m.cfg", 9, 1)), "expects an integer"),
    (ModParam("tm|(", "fr_timeout", 1, ("m.cfg", 9, 1)), "bad module name"),
])
def test_modparam_errors_at_position(line: ModParam, needle: str) -> None:
    classes = load_modules([LoadModule("tm", "tm.so")])
    with pytest.raises(ConfigError) as ei:
        apply_modparams(classes, [line])
    assert ei.value.pos == ("m.cfg", 9, 1)
    assert needle in ei.value.message


class _Needy(Module):
    name = "needy"
    depends = ("tm",)
    params = (Param("hooks", str, None, multi=True), Param("level", int, 1))

    def check(self) -> None:
        if self.param("level") > 5:
            raise ConfigError("level too high")


def test_depends_checked_and_multi_params_and_check(monkeypatch: pytest.MonkeyPatch) -> None:
    import routescript.core.loader as loader

    real = loader.find_module_class
    monkeypatch.setattr(loader, "find_module_class", lambda n: _Needy if n == "needy" else real(n))
    with pytest.raises(ConfigError, match="depends on module 'tm'") as ei:
        load_modules([LoadModule("needy", "needy.so", ("d.cfg", 4, 1))])
    assert ei.value.pos == ("d.cfg", 4, 1)
    classes = load_modules([LoadModule("tm", "tm.so"), LoadModule("needy", "needy.so", ("d.cfg", 5, 1))])
    values = apply_modparams(classes, [ModParam("needy", "hooks", "a"), ModParam("needy", "hooks", "b"),
                                       ModParam("needy", "level", 9)])
    assert values["needy"]["hooks"] == ["a", "b"]
    with pytest.raises(ConfigError, match="module 'needy': level too high") as ei2:
        instantiate(classes, values, server=None)
    assert ei2.value.pos == ("d.cfg", 5, 1)


def test_entry_point_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    import routescript.core.loader as loader

    class EP:
        name = "thirdparty"
        group = loader.ENTRY_POINT_GROUP

        def load(self) -> type[Module]:
            return _Needy

    monkeypatch.setattr(loader.metadata, "entry_points", lambda group: [EP()] if group == EP.group else [])
    assert loader.find_module_class("thirdparty") is _Needy


def test_a_module_loaded_twice_is_a_warning(tmp_path: Path) -> None:
    """Two copies of a snippet (an example that loads httpd, plus a test that adds it again) used to
    pass in silence, their modparams mixing on one module."""
    from routescript.core.server import Server

    cfg = tmp_path / "twice.cfg"
    cfg.write_text('socket=udp:127.0.0.1:5999\nloadmodule "sl.so"\nloadmodule "httpd.so"\n'
                   'modparam("httpd", "port", 8001)\nloadmodule "httpd.so"\n'
                   'route { sl_send_reply(200, "OK"); }\n')
    loaded = Server().load(str(cfg))
    texts = [str(w) for w in loaded.warnings]
    assert any(f'{cfg}:5:1: warning: module "httpd" is loaded already (line 3)' in t for t in texts), texts


def _all_module_classes() -> dict[str, type[Module]]:
    root = Path(__file__).resolve().parents[2] / "modules"
    found = {d.name: find_module_class(d.name) for d in sorted(root.iterdir())
             if (d / "__init__.py").exists()}
    return {name: cls for name, cls in found.items() if cls is not None}


def test_what_modules_need_names_modules_and_has_no_cycle() -> None:
    """`depends` and `uses` order the start and the stop (ModuleSet.start_order): every name must be a
    module, and no chain may come back to where it began (a cycle would fall back to load order)."""
    classes = _all_module_classes()
    assert {"pua", "presence", "acc", "dialog"} <= set(classes)
    needs = {name: set(cls.depends) | set(cls.uses) for name, cls in classes.items()}
    assert {dep for deps in needs.values() for dep in deps} <= set(classes)
    assert "presence" in needs["pua"] and "dialog" in needs["acc"]

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for dep in needs[start]:
            if dep == target or (dep not in seen and reaches(dep, target, seen | {dep})):
                return True
        return False

    assert [name for name in classes if reaches(name, name, set())] == []


def test_start_order_keeps_load_order_but_puts_needs_first() -> None:
    class Base(Module):
        pass

    def mod(name: str, depends: tuple[str, ...] = (), uses: tuple[str, ...] = ()) -> Module:
        cls = type(name, (Base,), {"name": name, "depends": depends, "uses": uses})
        return cls(object(), {})

    from routescript.core.module import ModuleSet

    modules = ModuleSet({"a": mod("a", uses=("c",)), "b": mod("b"), "c": mod("c", depends=("b",)),
                         "d": mod("d", uses=("absent",)), "x": mod("x", uses=("y",)),
                         "y": mod("y", uses=("x",))})
    # a waits for c, c for b; d's missing use is ignored; the x-y cycle keeps load order
    assert modules.start_order() == ["b", "c", "a", "d", "x", "y"]
