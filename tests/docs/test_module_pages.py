"""Every module we ship has its reference page, docs/modules/<name>.md, and the page names everything the
module declares: each parameter, script function, MI command, pseudo-variable and event (issue 22).

A name counts as documented when an inline code span of the page starts with it: `db_url`,
`save(domain[, flags])`, `$T_branch_idx`, `$(dlg_val(name))`, `E_DLG_STATE_CHANGED`. A span holding a `*`
is a pattern (`*_column`) covering every name it matches. A heading documents every name in it
(`## strip(n), strip_tail(n), prefix(s)`). Fenced code blocks do not count: an example shows a name, it
does not document it. The modules are found as the loader finds them (every package
under routescript.modules), so a module added later is checked the day it lands.

Core functions (registered by the core, not by a module) are held to docs/core-functions.md the same way.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import routescript.modules as shipped
from routescript.core.loader import find_module_class
from routescript.core.module import Module

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "modules"

_FENCED = re.compile(r"^```.*?^```", re.S | re.M)
_SPAN = re.compile(r"`([^`\n]+)`")
# the name a span starts with, after an optional `$` or `$(` (pseudo-variables) - names hold dots
# (`auth.alg`) and colons (`presence:refresh_watchers`)
_LEADING_NAME = re.compile(r"^\$?\(?([A-Za-z_*][\w.:*]*)")
_HEADING = re.compile(r"^#+ (.*)$", re.M)
_WORD = re.compile(r"[A-Za-z_][\w.]*")


def module_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(shipped.__path__))


def module_class(name: str) -> type[Module]:
    importlib.import_module(f"routescript.modules.{name}")
    cls = find_module_class(name)
    assert cls is not None, f"routescript.modules.{name} has no MODULE class"
    return cls


def documented_names(text: str) -> tuple[set[str], list[str]]:
    """(names, patterns) that the page's inline code spans start with."""
    prose = _FENCED.sub("", text)
    names = {word.rstrip(".") for heading in _HEADING.findall(prose) for word in _WORD.findall(heading)}
    patterns: list[str] = []
    for span in _SPAN.findall(prose):
        found = _LEADING_NAME.match(span.strip())
        if found is None:
            continue
        name = found.group(1).rstrip(".:")
        if "*" in name:
            patterns.append(name)
        else:
            names.add(name)
    return names, patterns


def undocumented(declared: set[str], text: str) -> list[str]:
    names, patterns = documented_names(text)
    return sorted(n for n in declared
                  if n not in names and not any(fnmatch.fnmatchcase(n, p) for p in patterns))


def declarations(cls: type[Module]) -> dict[str, set[str]]:
    """What a module class declares, by kind, read from the class (no instance: no database, no server)."""
    return {
        "parameters": {p.name for p in cls.params},
        "functions": cls.function_names(),
        "MI commands": cls.mi_command_names(),
        "pseudo-variables": cls.pvar_names(),
        "events": set(cls.events),
    }


@pytest.mark.parametrize("name", module_names())
def test_every_module_has_a_page_documenting_its_exports(name: str) -> None:
    page = PAGES / f"{name}.md"
    assert page.is_file(), f"module {name} has no reference page {page.relative_to(ROOT)}"
    text = page.read_text()
    missing = {kind: gaps for kind, declared in declarations(module_class(name)).items()
               if (gaps := undocumented(declared, text))}
    assert not missing, f"docs/modules/{name}.md does not document what module {name} declares: " + "; ".join(
        f"{kind}: {', '.join(gaps)}" for kind, gaps in missing.items())


def test_core_functions_are_documented() -> None:
    from routescript.core.functions import core_functions
    from routescript.core.relay import relay_functions
    from routescript.core.routing import routing_functions
    from routescript.script.registry import Registry

    declared = {f.name for f in (*core_functions(), *routing_functions(Registry(), None), *relay_functions())}
    gaps = undocumented(declared, (ROOT / "docs" / "core-functions.md").read_text())
    assert not gaps, f"docs/core-functions.md does not document the core functions {', '.join(gaps)}"


# --- the checker itself: a name is missed when the page lacks it, found when a span names it -------------

def test_a_name_only_in_prose_or_in_an_example_is_not_documented() -> None:
    text = "The save function stores.\n```\nsave(\"location\");\n```\n"
    assert undocumented({"save"}, text) == ["save"]


def test_spans_starting_with_a_name_and_patterns_document_it() -> None:
    text = ("| `save(domain[, flags])` | 1 |\n| `$T_branch_idx` | |\n| `$(dlg_val(name))` | |\n"
            "`*_column` are refused; `auth.alg`.")
    declared = {"save", "T_branch_idx", "dlg_val", "user_column", "auth.alg", "lookup"}
    assert undocumented(declared, text) == ["lookup"]


def test_a_heading_documents_the_names_in_it() -> None:
    text = "## Flags: setflag/resetflag(flag), strip(n)\n"
    assert undocumented({"setflag", "resetflag", "strip", "prefix"}, text) == ["prefix"]
