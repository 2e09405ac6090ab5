"""Any input either parses or raises ScriptError - never another exception."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.cli import main
from routescript.script import ScriptError, check_script, parse_text
from routescript.script.diagnostics import summary_lines
from routescript.script.grammar import MAX_ERRORS

PIECES = ["route", "{", "}", "(", ")", ";", "if", "else", "$var(x)", "$(avp(y)[*]{s.len})", '"s $ru"', "'",
          '"', "=", "==", "=~", "1", "-", "0x1f", "switch", "case", ":", "break", "exit", "f", ",", "[", "]",
          "/*", "*/", "#", "\n", "loadmodule", "modparam", "socket=udp:[::1]:5060", "timer_route", "$", "{s.",
          "include_file", "return", "while", "for", "in", "async", "&&", "!", "NULL"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_token_soup_never_crashes(pieces: list[str]) -> None:
    try:
        script = parse_text(" ".join(pieces), "fuzz.cfg")
    except ScriptError as exc:
        assert exc.diagnostics and all(d.pos.file == "fuzz.cfg" for d in exc.diagnostics)
        return
    check_script(script)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        parse_text(text, "fuzz.cfg")
    except ScriptError:
        pass


# ---- issue 17: a real script with a mistake typed into it -------------------------------------------
# Any edit of a working script either still checks cleanly or gives diagnostics that point inside the
# file, are never repeated, and end in a summary; never a traceback.

_SAMPLE = (Path(__file__).parent / "fixtures" / "presence-server.cfg").read_text()
_TYPOS = ["", ";", "{", "}", "(", ")", '"', "'", "`", "@", "\\", "if", "else", "==", "$", "$var(", "#", "/*",
          "\n", "route", "loadmodule", "=", "10.0.0.1", "&&", ",", "break;"]


def _check_diagnostics(text: str) -> None:
    try:
        script = parse_text(text, "typo.cfg")
    except ScriptError as exc:
        diags = exc.diagnostics
        assert any(d.severity == "error" for d in diags)
        keys = [(d.pos, d.message, d.severity) for d in diags]
        assert len(keys) == len(set(keys))
        nlines = text.count("\n") + 1
        assert all(d.pos.file == "typo.cfg" and 1 <= d.pos.line <= nlines for d in diags)
        assert len([d for d in diags if d.severity == "error"]) <= MAX_ERRORS
        assert summary_lines(diags, exc.omitted)[-1].startswith("aborting: ")
        return
    for d in check_script(script):
        assert d.pos.file == "typo.cfg" and d.severity == "error"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_SAMPLE)), st.integers(0, 12), st.sampled_from(_TYPOS))
def test_a_typo_anywhere_in_a_real_script_gives_diagnostics_not_a_traceback(at: int, cut: int,
                                                                           typo: str) -> None:
    _check_diagnostics(_SAMPLE[:at] + typo + _SAMPLE[at + cut:])


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=120))
def test_check_command_exits_0_or_1_on_any_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "any.cfg")
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            rc = main(["check", "--syntax-only", path])
        assert rc in (0, 1)
        if rc == 1:
            assert err.getvalue().rstrip("\n").splitlines()[-1].startswith("aborting: ")
