"""Module.runs_in (docs/workers.md, section 1): the MI/HTTP listeners run in the supervisor, SIP work in
the workers; a module depending on a supervisor-only module must run there too (else it would start
without it), and a wrong value is a test failure, not a runtime guess."""

from __future__ import annotations

import pkgutil

import routescript.modules as package
from routescript.core.loader import find_module_class
from routescript.core.module import Module

SUPERVISOR_SIDE = {"mi_http", "mi_fifo", "httpd", "prometheus"}


def all_module_classes() -> dict[str, type[Module]]:
    found: dict[str, type[Module]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        cls = find_module_class(info.name)
        if cls is not None:
            found[cls.name] = cls
    return found


def test_listeners_run_in_the_supervisor_and_the_rest_in_the_workers() -> None:
    classes = all_module_classes()
    assert classes.keys() >= SUPERVISOR_SIDE
    for name, cls in classes.items():
        assert cls.runs_in in ("workers", "supervisor", "both"), name
        assert (cls.runs_in == "supervisor") == (name in SUPERVISOR_SIDE), name


def test_a_module_runs_where_its_dependencies_run() -> None:
    classes = all_module_classes()
    for name, cls in classes.items():
        for dep in cls.depends:
            if dep in classes and classes[dep].runs_in == "supervisor":
                assert cls.runs_in == "supervisor", f"{name} depends on {dep}, which runs in the supervisor"
