"""docs/core-parameters.md documents every core parameter (OpenSIPS 3.4's list and ours), and the state
its row gives (built, accepted, refused) is the code's (issue 22): a parameter added to KNOWN_GLOBALS, or
moved between param_policy.ACCEPTED and REFUSED, fails here, named, until the page says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from routescript.core.config import _REMOVED_PARAM_HINTS, KNOWN_GLOBALS, OPENSIPS_CORE_PARAMS
from routescript.core.param_policy import ACCEPTED, REFUSED

PAGE = Path(__file__).resolve().parents[2] / "docs" / "core-parameters.md"
# | `name` [(note)] | type | default | here |
_ROW = re.compile(r"^\| `([a-z_0-9]+)`[^|]*\|[^|]*\|[^|]*\| (.*) \|$", re.M)
_REFUSED_ELSEWHERE: set[str] = set()   # refused by a check of their own rather than param_policy


def rows() -> dict[str, str]:
    return dict(_ROW.findall(PAGE.read_text()))


def test_every_core_parameter_has_a_row() -> None:
    missing = sorted((KNOWN_GLOBALS.keys() | OPENSIPS_CORE_PARAMS) - rows().keys())
    assert not missing, f"docs/core-parameters.md has no row for the core parameters {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(KNOWN_GLOBALS))
def test_the_row_says_the_state_the_code_gives(name: str) -> None:
    text = rows().get(name, "")
    if name in ACCEPTED:
        assert text.startswith("accepted: "), f"{name}: ACCEPTED in param_policy, the page says: {text}"
    elif name in REFUSED or name in _REFUSED_ELSEWHERE:
        assert text.startswith("**refused**"), f"{name}: refused in the code, the page says: {text}"
    else:
        assert text and not text.startswith(("accepted: ", "**refused**")), \
            f"{name}: built in the code, the page says: {text}"


def test_the_names_of_other_versions_are_listed() -> None:
    page = PAGE.read_text()
    missing = sorted(n for n in _REMOVED_PARAM_HINTS if f"| `{n}` |" not in page)
    assert not missing, f"docs/core-parameters.md does not list the unknown names {', '.join(missing)}"


@pytest.mark.parametrize("doc", ["README.md", "docs/language.md", "docs/operations.md",
                                 "docs/migrating-from-opensips.md"])
def test_the_page_is_linked(doc: str) -> None:
    assert "core-parameters.md" in (PAGE.parents[1] / doc).read_text(), f"{doc} does not link the page"
