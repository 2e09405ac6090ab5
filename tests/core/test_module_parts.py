"""Module.part_types / export_parts: a module composed of parts exports the parts' tagged script functions,
pseudo-variables (with their setters) and MI commands as its own, bound to the part instances it made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from routescript.core.module import Module, mi_command, pseudo_variable, script_function


class Counter:
    """A part: its own state, its own exports."""

    def __init__(self) -> None:
        self.count = 0

    @script_function("count_up")
    def count_up(self, ctx: Any) -> int:
        self.count += 1
        return 1

    @pseudo_variable("count", setter="set_count")
    def pv_count(self, ctx: Any, key: Any, index: Any) -> int:
        return self.count

    def set_count(self, ctx: Any, key: Any, index: Any, value: Any) -> None:
        self.count = int(value)

    @mi_command("count_show", workers="one", doc="the count")
    def mi_count_show(self) -> dict[str, int]:
        return {"count": self.count}


class Composed(Module):
    name = "composed"
    part_types = (Counter,)

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.counter = Counter()

    def export_parts(self) -> Sequence[object]:
        return (self.counter,)

    @script_function("own_function")
    def own_function(self, ctx: Any) -> int:
        return 1


def test_names_known_from_the_class_include_the_parts() -> None:
    assert Composed.function_names() == {"count_up", "own_function"}
    assert Composed.pvar_names() == {"count"}
    assert Composed.mi_command_names() == {"count_show"}


def test_exports_are_bound_to_the_part_instance() -> None:
    module = Composed(None, {})
    functions = {spec.name: spec for spec in module.functions()}
    assert set(functions) == {"count_up", "own_function"}
    [pvar] = module.pvars()
    [command] = module.mi_commands()
    assert command.name == "count_show" and command.params == ()
    functions["count_up"].impl(None)
    assert module.counter.count == 1 and pvar.getter(None, None, None) == 1
    assert pvar.setter is not None
    pvar.setter(None, None, None, "7")      # the setter named by the decorator, on the part
    assert module.counter.count == 7 and command.impl() == {"count": 7}


def test_a_module_without_parts_exports_only_its_own() -> None:
    class Plain(Module):
        name = "plain"

        @script_function("plain_work")
        def plain_work(self, ctx: Any) -> int:
            return 1

    assert {spec.name for spec in Plain(None, {}).functions()} == {"plain_work"}
    assert Plain.function_names() == {"plain_work"}
