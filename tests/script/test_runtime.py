"""Compiled routes run with OpenSIPS semantics (test functions and pseudo-variables from conftest)."""

from __future__ import annotations

import logging

import pytest

from routescript.script import DROP_KEY, CompiledScript, compile_script, parse_text, was_dropped
from routescript.script.context import ERROR_ROUTE, EVENT_ROUTE, REQUEST_ROUTE, STARTUP_ROUTE, MsgContext
from routescript.script.registry import ArgSpec, Registry, function


def build(src: str, registry: Registry, **kw) -> CompiledScript:  # type: ignore[no-untyped-def]
    return compile_script(parse_text(src, "r.cfg"), registry, **kw)


async def run(src: str, registry: Registry, ctx: MsgContext | None = None, **kw) -> tuple[int, MsgContext]:  # type: ignore[no-untyped-def]
    ctx = ctx or MsgContext()
    rc = await build(src, registry, **kw).run(REQUEST_ROUTE, None, ctx)
    return rc, ctx


def logged(calls) -> list[str]:  # type: ignore[no-untyped-def]
    return [c[1] for c in calls.log if c[0] == "log_it"]


async def test_routes_are_coroutine_functions_compiled_once(registry: Registry) -> None:
    cs = build("route { exit; } route[a] { return(2); } timer_route[t, 30] { exit; }", registry)
    import inspect
    assert all(inspect.iscoroutinefunction(fn) for fn in cs.routes.values())
    assert cs.get(REQUEST_ROUTE) is cs.get(REQUEST_ROUTE, "main") is cs.routes[(REQUEST_ROUTE, None)]
    assert "async def" in cs.source
    assert [(n, i) for n, i, _ in cs.timer_routes] == [("t", 30)]


async def test_if_else_and_function_truth(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    await run('route { if (fail()) log_it("a"); else if (ok()) log_it("b"); else log_it("c");'
              ' if (!fail() && ok()) log_it("d"); if (fail() || fail()) log_it("e"); }', registry)
    assert logged(calls) == ["b", "d"]


async def test_function_returning_zero_stops_the_script(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    rc, _ = await run('route { log_it("before"); if (stop()) log_it("x"); log_it("after"); }', registry)
    assert rc == 0 and logged(calls) == ["before"]


async def test_exit_return_and_retcode(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    src = '''route {
      route(sub);
      log_it("rc=$rc retcode=$retcode");
      ret(-3);
      log_it("rc=$rc");
      if (route(positive)) log_it("positive");
      route(zero);
      log_it("never");
    }
    route[sub] { return(-2); }
    route[positive] { return; }
    route[zero] { return(0); }'''
    rc, _ctx = await run(src, registry)
    assert logged(calls) == ["rc=-2 retcode=-2", "rc=-3", "positive"]
    assert rc == 0


async def test_fallthrough_end_returns_one(registry: Registry) -> None:
    rc, _ = await run("route { $var(a) = 1; }", registry)
    assert rc == 1


async def test_drop_sets_the_flag(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    rc, ctx = await run('route { route(d); log_it("no"); } route[d] { drop; }', registry)
    assert rc == 0 and ctx.extra[DROP_KEY] is True and was_dropped(ctx) and logged(calls) == []
    _, ctx2 = await run("route { exit; }", registry)
    assert not was_dropped(ctx2)


async def test_assignments_and_arithmetic(registry: Registry) -> None:
    src = '''route {
      $var(a) = 10; $var(a) += 5; $var(a) -= 1; $var(a) *= 3; $var(a) /= 4; $var(a) %= 7;
      $var(b) = 6; $var(b) |= 1; $var(b) &= 3;
      $var(c) = (1 << 4) + (32 >> 2) - (5 ^ 1) + ~0 + -7 / 2;
      $var(d) = "sip:" + $rU + "@" + "example.com";
      $var(e) = "n=" + 5;
      $var(f) = $var(nope) - 1;
      $var(g) = 5; $var(g) = NULL;
      $var(h) = 0x10 + 010;
    }'''
    ctx = MsgContext()
    ctx.vars["ruser"] = "alice"
    await run(src, registry, ctx)
    v = ctx.vars
    assert v["a"] == ((10 + 5 - 1) * 3 // 4) % 7
    assert v["b"] == 3
    assert v["c"] == (16 + 8 - 4 - 1 - 7) // 2   # OpenSIPS: + - * / % one level, left to right
    assert v["d"] == "sip:alice@example.com" and v["e"] == "n=5"
    assert v["f"] is None and v["g"] is None and v["h"] == 24


async def test_colon_assign_replaces_avp_values(registry: Registry) -> None:
    _, ctx = await run('route { $avp(x) = 1; $avp(x) = 2; $avp(y) = 1; $avp(y) = 2; $avp(y) := 3; }',
                       registry)
    assert ctx.avps["x"] == [2, 1] and ctx.avps["y"] == [3]


async def test_comparisons_null_and_mixed_types(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    src = '''route {
      $var(s) = "5";
      if ($var(s) == 5) log_it("str==int");
      if ($var(s) < 10) log_it("numeric <");
      if ($var(none) == NULL) log_it("null");
      if ($var(none) != "") log_it("null != empty");
      if ("abc" < "abd") log_it("str <");
      if ($var(s)) log_it("truthy");
      if (!$var(none)) log_it("null falsy");
      if ([ $var(s) - 5 ]) log_it("never");
    }'''
    await run(src, registry)
    assert logged(calls) == ["str==int", "numeric <", "null", "null != empty", "str <", "truthy",
                             "null falsy"]


async def test_regex_match_literal_and_dynamic(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    ctx = MsgContext()
    ctx.vars.update(ruser="1800555", ruri="sip:Bob@Example.com")
    src = '''route {
      if ($rU =~ "^1800") log_it("toll-free");
      if ($ru =~ "@example\\.com$") log_it("icase");
      if ($rU !~ "^9") log_it("not 9");
      $var(rx) = "5+$";
      if ($rU =~ $var(rx)) log_it("dynamic");
      if ($var(none) =~ ".*") log_it("never");
      $var(n) = 42;
      if ($var(n) =~ "^4" && $rU =~ "5$" && !($var(n) =~ "x")) log_it("int, two in one test");
    }'''
    await run(src, registry, ctx)
    assert logged(calls) == ["toll-free", "icase", "not 9", "dynamic", "int, two in one test"]


async def test_switch_fallthrough_default_and_break(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    src = '''route {
      switch ($var(k)) {
        case "a": log_it("a");
        case "b": log_it("b"); break;
        default: log_it("default");
        case 3: log_it("three");
      }
      log_it("after");
    }'''
    for k, want in [("a", ["a", "b"]), ("b", ["b"]), (3, ["three"]), ("3", ["three"]),
                    ("z", ["default", "three"])]:
        calls.log.clear()
        ctx = MsgContext()
        ctx.vars["k"] = k
        await run(src, registry, ctx)
        assert logged(calls) == want + ["after"], k


async def test_switch_inside_while_break_leaves_switch_only(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    src = '''route {
      $var(i) = 0;
      while ($var(i) < 3) {
        $var(i) += 1;
        switch ($var(i)) { case 2: log_it("two"); break; default: log_it("x$var(i)"); }
      }
    }'''
    await run(src, registry)
    assert logged(calls) == ["x1", "two", "x3"]


async def test_while_is_bounded(registry: Registry, calls, caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.ERROR, logger="routescript.script"):
        _, ctx = await run('route { $var(n) = 0; while (1) { $var(n) += 1; } log_it("out"); }', registry,
                           max_while_loops=50)
    assert ctx.vars["n"] == 50 and logged(calls) == ["out"]
    assert "r.cfg:1:22" in caplog.text and "max_while_loops" in caplog.text


async def test_foreach_over_all_values(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    src = '''route {
      $avp(l) = "c"; $avp(l) = "b"; $avp(l) = "a";
      for ($var(v) in $(avp(l)[*])) { if ($var(v) == "c") break; log_it($var(v)); }
      for ($var(v) in $(avp(empty)[*])) log_it("never");
    }'''
    await run(src, registry)
    assert logged(calls) == ["a", "b"]


async def test_route_arguments_become_params(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    ctx = MsgContext()
    ctx.params = {"source": "event"}
    await run('route { route(p, "one", 2 + 3, $var(x)); log_it("$param(source)"); }\n'
              'route[p] { log_it("$param(1)|$param(2)|$param(3)"); route(q); }\n'
              'route[q] { log_it("q sees $param(1)"); }', registry, ctx)
    assert logged(calls) == ["one|5|<null>", "q sees one", "event"]


async def test_argument_kinds_and_fixups(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    ctx = MsgContext()
    ctx.vars.update(method="INVITE", n="42")
    src = '''route {
      num("7"); num(8); num($var(n)); num("0x10");
      if (is_m("INVITE|ACK")) log_it("method");
      if (is_m("$var(method)")) log_it("dynamic regex");
      set_out("$var(out)", "v1"); set_out($var(out2), "v2");
      shout("lit"); $var(w) = "dyn"; shout($var(w));
      anyv($var(n)); anyv(NULL); anyv(NAT);
      log_it("only");
    }'''
    await run(src, registry, ctx)
    nums = [c[1] for c in calls.log if c[0] == "num"]
    assert nums == [7, 8, 42, 16]
    assert logged(calls) == ["method", "dynamic regex", "only"]
    assert ctx.vars["out"] == "v1" and ctx.vars["out2"] == "v2"
    assert [c[1] for c in calls.log if c[0] == "shout"] == ["LIT", "DYN"]
    assert [c[1] for c in calls.log if c[0] == "anyv"] == ["42", None, "NAT"]
    assert ("log_it", "only", None) in calls.log  # an omitted optional argument is passed as None


async def test_runtime_conversion_failure_makes_call_false(registry: Registry, calls, caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.ERROR, logger="routescript.script"):
        await run('route {\n $var(x) = "nan";\n'
                  ' if (!num($var(x))) log_it("failed"); num($var(x)); log_it("rc=$rc"); }', registry)
    assert logged(calls) == ["failed", "rc=-1"]
    assert "r.cfg:3:7: num(): expected a number" in caplog.text


async def test_exception_in_function_is_logged_with_position(registry: Registry, calls, caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.ERROR, logger="routescript.script"):
        rc, _ = await run('route {\n  if (!boom()) log_it("went on");\n}', registry)
    assert rc == 1 and logged(calls) == ["went on"]
    assert "r.cfg:2:8: boom() failed: RuntimeError: kaboom" in caplog.text


async def test_exception_outside_a_call_is_logged_with_position(caplog) -> None:  # type: ignore[no-untyped-def]
    from routescript.script.registry import PVarSpec

    def bad_get(ctx, key, index):  # type: ignore[no-untyped-def]
        raise KeyError("broken getter")
    reg = Registry()
    reg.add_pvar(PVarSpec("bad", bad_get))
    reg.add_pvar(PVarSpec("var", lambda c, k, i: c.vars.get(k), lambda c, k, i, v: c.vars.__setitem__(k, v),
                          key="required"))
    with caplog.at_level(logging.ERROR, logger="routescript.script"):
        rc, _ = await run("route {\n  $var(a) = 1;\n  $var(b) = $bad;\n}", reg)
    assert rc == -1 and "r.cfg:3:3: error while running route: KeyError" in caplog.text


async def test_transformations_chain_and_fail_to_null(registry: Registry) -> None:
    ctx = MsgContext()
    ctx.vars.update(s="hello world", i=2, list="a;b;c")
    src = '''route {
      $var(a) = $(var(s){s.substr,0,5}{s.toupper});
      $var(b) = $(var(s){s.len});
      $var(c) = $(var(s){s.substr,$var(i),3});
      $var(d) = $(var(list){s.select,1,;});
      $var(e) = $(var(s){s.int});
      $var(f) = "len=$(var(s){s.len})";
    }'''
    await run(src, registry, ctx)
    v = ctx.vars
    assert (v["a"], v["b"], v["c"], v["d"], v["e"], v["f"]) == ("HELLO", 11, "llo", "b", None, "len=11")


async def test_string_with_dotted_text_after_pvar(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    ctx = MsgContext()
    ctx.vars["ruser"] = "bob"
    await run('route { log_it("user $rU. done"); log_it("$rU.example.com"); }', registry, ctx)
    assert logged(calls) == ["user bob. done", "bob.example.com"]


async def test_async_function_awaited_and_async_statement(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    src = '''route { aret(5); log_it("rc=$rc"); async(aret(7), resume); log_it("never"); }
             route[resume] { log_it("resumed rc=$rc"); }'''
    rc, _ = await run(src, registry)
    assert [c for c in calls.log if c[0] == "aret"] == [("aret", 5), ("aret", 7)]
    assert logged(calls) == ["rc=5", "resumed rc=7"] and rc == 0


async def test_asserts_off_by_default_on_when_enabled(registry: Registry, calls, caplog) -> None:  # type: ignore[no-untyped-def]
    src = 'route { assert($var(a) == 1, "a is one"); log_it("after"); }'
    await run(src, registry)
    assert logged(calls) == ["after"]
    calls.log.clear()
    with caplog.at_level(logging.ERROR, logger="routescript.script"):
        rc, _ = await run(src, registry, enable_asserts=True)
    assert rc == 0 and logged(calls) == [] and "assertion failed: a is one" in caplog.text


async def test_other_route_kinds_and_run_of_missing_route(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    cs = build('startup_route { log_it("start"); } error_route { log_it("err"); }\n'
               'event_route[E_TEST] { log_it("ev $param(x)"); } timer_route[tick, 5] { log_it("tick"); }',
               registry)
    assert cs.startup_route is not None and cs.error_route is not None
    ctx = MsgContext(params={"x": "1"})
    assert await cs.run(EVENT_ROUTE, "E_TEST", ctx) == 1 and ctx.route_type == EVENT_ROUTE
    await cs.startup_route(MsgContext(route_type=STARTUP_ROUTE))
    await cs.event_routes["E_TEST"](MsgContext(params={"x": "2"}))
    (_name, _interval, fn), = cs.timer_routes
    await fn(MsgContext())
    await cs.run(ERROR_ROUTE, None, MsgContext())
    assert logged(calls) == ["ev 1", "start", "ev 2", "tick", "err"]
    assert await cs.run(REQUEST_ROUTE, None, MsgContext()) == 1  # not defined: nothing happens
    assert cs.get(REQUEST_ROUTE, "nope") is None


async def test_route_kind_restriction_allows_permitted_kinds(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    cs = build("failure_route[f] { reply_only(); route(common); } route[common] { reply_only(); }", registry)
    assert await cs.run("failure", "f", MsgContext()) == 1
    assert [c[0] for c in calls.log] == ["reply_only", "reply_only"]


@pytest.mark.parametrize("depth", [1, 15])
async def test_nested_blocks_compile(registry: Registry, depth: int, calls) -> None:  # type: ignore[no-untyped-def]
    src = "route { " + "if (ok()) { " * depth + 'log_it("deep");' + " }" * depth + " }"
    await run(src, registry)
    assert logged(calls) == ["deep"]


# ---- failures are recorded on the context for the core (ctx.failure / ctx.failure_pos) ----------------

def _failing_registry(registry: Registry) -> Registry:
    from routescript.script.registry import PVarSpec, function
    from routescript.sip import ParseError

    def bad_header(ctx: MsgContext) -> int:
        raise ParseError("Bad Event header")

    def bad_value(ctx: MsgContext) -> int:
        raise ValueError("not a number")

    def broken_pv(ctx: MsgContext, key: object, index: object) -> object:
        raise ParseError("Bad Contact header")

    registry.add_function(function("bad_header", bad_header))
    registry.add_function(function("bad_value", bad_value))
    registry.add_pvar(PVarSpec("ct", broken_pv))
    return registry


async def test_failing_function_is_false_recorded_and_the_script_goes_on(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    from routescript.sip import ParseError

    reg = _failing_registry(registry)
    rc, ctx = await run('route {\n  if (!bad_value()) log_it("v $rc");\n  boom();\n  bad_header();\n'
                        '  log_it("on");\n}', reg)
    assert rc == 1 and logged(calls) == ["v -1", "on"]
    # the peer's bad header outranks our bug, which outranks a bad value: the core acts on the first
    assert isinstance(ctx.failure, ParseError) and ctx.failure.reason == "Bad Event header"
    assert (ctx.failure_pos.file, ctx.failure_pos.line, ctx.failure_pos.col) == ("r.cfg", 4, 3)
    rc, ctx = await run('route {\n  bad_value();\n  boom();\n}', reg)
    assert isinstance(ctx.failure, RuntimeError) and ctx.failure_pos.line == 3
    rc, ctx = await run('route {\n  bad_value();\n}', reg)
    assert isinstance(ctx.failure, ValueError) and ctx.failure_pos.line == 2
    _, ctx = await run('route { ok(); }', reg)
    assert ctx.failure is None and ctx.failure_pos is None


async def test_failing_pseudo_variable_stops_the_route_with_its_position(  # type: ignore[no-untyped-def]
        registry: Registry, calls, caplog: pytest.LogCaptureFixture) -> None:
    from routescript.sip import ParseError

    reg = _failing_registry(registry)
    with caplog.at_level(logging.WARNING):
        rc, ctx = await run('route {\n  log_it("a");\n  route(x);\n  log_it("b");\n}\n'
                            'route[x] {\n    if ($ct == "y") exit;\n}', reg)
    assert rc == -1 and logged(calls) == ["a"]
    assert isinstance(ctx.failure, ParseError) and ctx.failure_pos.line == 7
    assert "r.cfg:7:" in caplog.text and "Bad Contact header" in caplog.text


async def test_calls_without_conversions_are_made_directly_from_the_route(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    """A function that converts none of its arguments is bound at load and called by the route itself
    (no CallSite frame between), with CallSite's rules: a non-int result normalised into $rc, 0 stops."""
    import sys

    callers: list[str] = []
    results = iter([True, None, False, "7"])

    def where(ctx: MsgContext, *args: object) -> object:
        callers.append(sys._getframe(1).f_code.co_name)
        return next(results)

    registry.add_function(function("where", where, ArgSpec("any", optional=True)))
    src = ('route {\n  if (where()) log_it("t $rc");\n  where($var(x));\n  log_it("n $rc");\n'
           '  if (!where()) log_it("f $rc");\n'
           '  if (fail()) log_it("no"); else if (where("x")) log_it("s $rc");\n'
           '  num($var(y));\n}')
    await run(src, registry, MsgContext(vars={"x": "v", "y": "3"}))
    assert callers == ["_r0"] * 4
    assert logged(calls) == ["t 1", "n 1", "f -1", "s 7"]
    assert ("num", 3) in calls.log   # converting its argument ($var(y) -> int): still through its site


async def test_direct_call_argument_failure_stops_the_route_not_the_call(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    """An argument evaluated outside the function (a broken pseudo-variable) stops the route with its
    position, as through a CallSite; it is not the function's failure."""
    reg = _failing_registry(registry)
    rc, ctx = await run('route {\n  log_it("a");\n  if (!anyv($ct)) log_it("false");\n  log_it("b");\n}', reg)
    assert rc == -1 and logged(calls) == ["a"] and not any(c[0] == "anyv" for c in calls.log)
    assert ctx.failure_pos is not None and ctx.failure_pos.line == 3


async def test_guarded_direct_call_is_skipped_without_evaluating_arguments(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    on = [False]
    registry.add_function(function("maybe_log", lambda ctx, text: calls.log.append(("maybe", text)) or -1,
                                   ArgSpec("any"), guard=lambda literals: lambda: on[0]))
    reg = _failing_registry(registry)
    src = 'route {\n  if (maybe_log($ct)) log_it("skipped: true $rc");\n}'
    rc, _ = await run(src, reg)
    assert rc == 1 and logged(calls) == ["skipped: true 1"]
    on[0] = True
    calls.log.clear()
    rc, _ = await run('route {\n  if (!maybe_log("x")) log_it("ran $rc");\n}', reg)
    assert calls.log == [("maybe", "x"), ("log_it", "ran -1", None)]


async def test_guarded_call_with_a_converted_argument_is_skipped_inline(registry: Registry, calls) -> None:  # type: ignore[no-untyped-def]
    """A statement call through its CallSite (its argument converted at run time) is skipped by its guard
    without evaluating the argument, $rc 1; when it runs, a failed conversion is the call's failure."""
    on = [False]
    registry.add_function(function("gnum", lambda ctx, n: calls.log.append(("gnum", n)) or 1,
                                   ArgSpec("int"), guard=lambda literals: lambda: on[0]))
    reg = _failing_registry(registry)
    rc, _ = await run('route {\n  gnum($ct);\n  log_it("rc $rc");\n}', reg)
    assert rc == 1 and calls.log == [("log_it", "rc 1", None)]
    on[0] = True
    calls.log.clear()
    rc, ctx = await run('route {\n  $var(n) = "x";\n  gnum($var(n));\n  log_it("rc $rc");\n'
                        '  $var(n) = "4";\n  gnum("$var(n)");\n}', reg)
    assert calls.log == [("log_it", "rc -1", None), ("gnum", 4)] and ctx.failure_pos.line == 3


def test_may_wait_names_the_routes_that_may_suspend(registry: Registry) -> None:
    """CompiledScript.may_wait: True for a route with an async function in it or in a route it calls,
    False for one without (tm runs those in place) and for a route the script does not define."""
    cs = build('route { ok(); } route[w] { aret(1); } onreply_route[quiet] { log_it("r"); }\n'
               'onreply_route[calls_w] { route(w); } failure_route[f] { aret(2); }', registry)
    assert not cs.may_wait(REQUEST_ROUTE) and not cs.may_wait(REQUEST_ROUTE, "main")
    assert cs.may_wait(REQUEST_ROUTE, "w")
    assert not cs.may_wait("onreply", "quiet")
    assert cs.may_wait("onreply", "calls_w")
    assert cs.may_wait("failure", "f")
    assert not cs.may_wait("onreply", None) and not cs.may_wait("failure", "missing")
