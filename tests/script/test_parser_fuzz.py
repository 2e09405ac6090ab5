"""Any input either parses or raises ScriptError - never another exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.script import ScriptError, check_script, parse_text

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
