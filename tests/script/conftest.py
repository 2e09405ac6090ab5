"""A small registry of test functions, pseudo-variables and transformations (our own, not the core's)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from routescript.script.context import FAILURE_ROUTE, ONREPLY_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.script.registry import ArgSpec, PVarSpec, Registry, TransformSpec, function


class Calls:
    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []


def make_registry(calls: Calls) -> Registry:
    reg = Registry()

    def rec(name: str, rc: int = 1):  # type: ignore[no-untyped-def]
        def impl(ctx: MsgContext, *args: Any) -> int:
            calls.log.append((name, *args))
            return rc
        return impl

    def ret(ctx: MsgContext, code: int) -> int:
        calls.log.append(("ret", code))
        return code

    async def aret(ctx: MsgContext, code: int) -> int:
        await asyncio.sleep(0)
        calls.log.append(("aret", code))
        return code

    def boom(ctx: MsgContext) -> int:
        raise RuntimeError("kaboom")

    def is_method(ctx: MsgContext, rx: Any) -> int:
        return 1 if rx.fullmatch(ctx.vars.get("method", "")) else -1

    def set_out(ctx: MsgContext, ref: Any, value: str) -> int:
        ref.set(ctx, value)
        return 1

    def upper_fixup(v: Any) -> Any:
        if v == "bad":
            raise ValueError("'bad' is not a good value")
        return str(v).upper()

    reg.add_function(function("log_it", rec("log_it"), ArgSpec("str"), ArgSpec("str", optional=True)))
    reg.add_function(function("ok", rec("ok")))
    reg.add_function(function("fail", rec("fail", -1)))
    reg.add_function(function("stop", rec("stop", 0)))
    reg.add_function(function("ret", ret, ArgSpec("int")))
    reg.add_function(function("aret", aret, ArgSpec("int")))
    reg.add_function(function("boom", boom))
    reg.add_function(function("num", rec("num"), ArgSpec("int")))
    reg.add_function(function("is_m", is_method, ArgSpec("regex")))
    reg.add_function(function("set_out", set_out, ArgSpec("pvar"), ArgSpec("str")))
    reg.add_function(function("shout", rec("shout"), ArgSpec("str", fixup=upper_fixup)))
    reg.add_function(function("anyv", rec("anyv"), ArgSpec("any")))
    reg.add_function(function("arm_failure", rec("arm_failure"), ArgSpec("route", name="failure")))
    reg.add_function(function("req_only", rec("req_only"), routes=(REQUEST_ROUTE,)))
    reg.add_function(function("reply_only", rec("reply_only"), routes=(ONREPLY_ROUTE, FAILURE_ROUTE)))

    def var_get(ctx: MsgContext, key: Any, index: Any) -> Any:
        return ctx.vars.get(key)

    def var_set(ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
        ctx.vars[key] = value

    def avp_get(ctx: MsgContext, key: Any, index: Any) -> Any:
        vals = ctx.avps.get(key, [])
        if index == "*":
            return list(vals)
        i = 0 if index is None else index
        try:
            return vals[i]
        except IndexError:
            return None

    def avp_set(ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
        if value is None:
            if index == "*" or index is None:
                ctx.avps.pop(key, None)
            return
        ctx.avps.setdefault(key, []).insert(0, value)

    def hdr_key(key: str) -> None:
        if not key or " " in key:
            raise ValueError(f"bad header name '{key}'")

    reg.add_pvar(PVarSpec("var", var_get, var_set, key="required"))
    reg.add_pvar(PVarSpec("avp", avp_get, avp_set, key="required"))
    reg.add_pvar(PVarSpec("ru", lambda c, k, i: c.vars.get("ruri")))
    reg.add_pvar(PVarSpec("rU", lambda c, k, i: c.vars.get("ruser")))
    reg.add_pvar(PVarSpec("hdr", lambda c, k, i: c.vars.get("hdr:" + k), key="required", check_key=hdr_key))
    reg.add_pvar(PVarSpec("rc", lambda c, k, i: c.retcode))
    reg.add_pvar(PVarSpec("retcode", lambda c, k, i: c.retcode))
    reg.add_pvar(PVarSpec("param", lambda c, k, i: c.params.get(k), key="required"))

    def substr(v: Any, start: int, length: int = 0) -> Any:
        s = str(v)
        return s[start:start + length] if length else s[start:]

    def select_fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
        if not isinstance(params[0], int):
            raise ValueError("the index must be a number")
        return params

    def select(v: Any, idx: int, sep: str) -> Any:
        parts = str(v).split(sep)
        return parts[idx]

    def s_int(v: Any) -> int:
        return int(v)

    reg.add_transform(TransformSpec("s.len", lambda v: len(str(v)) if v is not None else 0))
    reg.add_transform(TransformSpec("s.toupper", lambda v: str(v).upper()))
    reg.add_transform(TransformSpec("s.substr", substr, 1, 2))
    reg.add_transform(TransformSpec("s.select", select, 2, 2, fixup=select_fixup))
    reg.add_transform(TransformSpec("s.int", s_int))
    return reg


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def registry(calls: Calls) -> Registry:
    return make_registry(calls)
