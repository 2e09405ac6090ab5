"""Operators with the meaning OpenSIPS gives them (cfg.y 2.2-master, route.c, action.c), not C's:
&& and || on one level, left to right; `!` over a whole comparison; + - * / % on one level, left to
right, above the bitwise operators; strings compared without regard to ASCII case (str_casematch), in
`==`, `!=`, the ordering operators and `switch`. A script that mixes levels C would bind differently
gets a warning at the place, and none once parentheses say which."""

from __future__ import annotations

import pytest

from routescript.script import compile_script, parse_text
from routescript.script.context import REQUEST_ROUTE, MsgContext
from routescript.script.registry import Registry


async def run(src: str, registry: Registry) -> MsgContext:
    ctx = MsgContext()
    await compile_script(parse_text(src, "ops.cfg"), registry).run(REQUEST_ROUTE, None, ctx)
    return ctx


async def test_arithmetic_is_left_to_right_as_in_opensips(registry: Registry) -> None:
    ctx = await run('''route {
        $var(a) = 2 + 3 * 4;          # (2 + 3) * 4
        $var(b) = 2 * 3 + 4;
        $var(c) = 2 + (3 * 4);
        $var(d) = 20 - 8 / 2 % 5;     # ((20 - 8) / 2) % 5
        $var(e) = 1 | 2 & 3;          # (1 | 2) & 3
        $var(f) = 1 << 2 + 1;         # arithmetic above bitwise: 1 << 3
    }''', registry)
    assert ctx.vars["a"] == 20 and ctx.vars["b"] == 10 and ctx.vars["c"] == 14
    assert ctx.vars["d"] == 1 and ctx.vars["e"] == 3 and ctx.vars["f"] == 8


@pytest.mark.parametrize(("a", "b", "c", "taken"), [
    (1, 0, 0, False),   # (1 || 0) && 0: C would take it (1 || (0 && 0))
    (0, 1, 1, True),
    (1, 1, 0, False),
])
async def test_and_or_are_one_level_left_to_right(registry: Registry, a: int, b: int, c: int,
                                                   taken: bool) -> None:
    ctx = await run(f'''route {{
        $var(a) = {a}; $var(b) = {b}; $var(c) = {c};
        if ($var(a) || $var(b) && $var(c)) $var(taken) = 1; else $var(taken) = 0;
    }}''', registry)
    assert ctx.vars["taken"] == int(taken)


async def test_not_negates_the_whole_comparison(registry: Registry) -> None:
    ctx = await run('''route {
        $var(x) = 2;
        if (!$var(x) == 1) $var(r) = "not one"; else $var(r) = "one";
    }''', registry)
    assert ctx.vars["r"] == "not one"     # !($var(x) == 1); (!2) == 1 would be false


async def test_strings_compare_without_regard_to_ascii_case(registry: Registry) -> None:
    ctx = await run('''route {
        $var(m) = "invite";
        if ($var(m) == "INVITE") $var(eq) = 1; else $var(eq) = 0;
        if ($var(m) != "Invite") $var(ne) = 1; else $var(ne) = 0;
        if ("apple" < "BANANA") $var(lt) = 1; else $var(lt) = 0;
        if ($var(m) == "invité") $var(other) = 1; else $var(other) = 0;
        switch ($var(m)) {
            case "INVITE": $var(sw) = "invite"; break;
            default: $var(sw) = "other";
        }
    }''', registry)
    assert ctx.vars["eq"] == 1 and ctx.vars["ne"] == 0 and ctx.vars["lt"] == 1
    assert ctx.vars["other"] == 0 and ctx.vars["sw"] == "invite"


@pytest.mark.parametrize(("expr", "first", "then"), [
    ("$var(a) + 3 * 4", "+", "*"),
    ("$var(a) - $var(b) % 2", "-", "%"),
    ("$var(a) | 2 & 1", "|", "&"),
    ("$var(a) ^ 1 << 2", "^", "<<"),
])
def test_a_mix_c_would_bind_otherwise_warns_at_its_place(expr: str, first: str, then: str) -> None:
    script = parse_text(f"route {{\n    $var(x) = {expr};\n}}\n", "ops.cfg")
    (w,) = script.warnings
    assert w.severity == "warning" and (w.pos.line, w.pos.col) == (2, 15)
    assert f"'{first}' then '{then}' without parentheses: OpenSIPS evaluates them left to right" in w.message


def test_or_then_and_warns_and_parentheses_silence_it() -> None:
    text = 'route {\n    if (is_method("A") || is_method("B") && $rU == "x") exit;\n}\n'
    script = parse_text(text, "ops.cfg")
    assert [w.message.split(":")[0] for w in script.warnings] == ["'||' then '&&' without parentheses"]
    for text in ['if ((is_method("A") || is_method("B")) && $rU == "x") exit;',
                 'if (is_method("A") || (is_method("B") && $rU == "x")) exit;',
                 'if (is_method("A") && $rU == "x" || is_method("B")) exit;',
                 '$var(x) = (2 + 3) * 4;', '$var(x) = 2 * 3 + 4;', '$var(x) = 2 + (3 * 4);']:
        assert parse_text(f"route {{\n    {text}\n}}\n", "ops.cfg").warnings == [], text
