"""Script variables: $var(name), $avp(name) (a stack of values), the last return code ($retcode $rc $?)
and route/event parameters ($param)."""

from __future__ import annotations

from typing import Any


from .context import MsgContext

from .pv_common import MAX_AVP_VALUES, _index, _pick, _script_value


# ---------------------------------------------------------------------------------------------------
# $var(name), $avp(name)

def get_var(ctx: MsgContext, key: str | None, index: Any) -> Any:
    return ctx.vars.get(key) if key is not None else None


def set_var(ctx: MsgContext, key: str | None, index: Any, value: Any) -> None:
    """`$var(x) = NULL` deletes the variable (reading it again gives NULL)."""
    if value is None:
        ctx.vars.pop(key, None)  # type: ignore[arg-type]
    else:
        ctx.vars[key] = _script_value(value)  # type: ignore[index]


def get_avp(ctx: MsgContext, key: str | None, index: Any) -> Any:
    return _pick(ctx.avps.get(key, []), index)  # type: ignore[arg-type]


def set_avp(ctx: MsgContext, key: str | None, index: Any, value: Any) -> None:
    values = ctx.avps.get(key)  # type: ignore[arg-type]
    idx = index if index == "append" else _index(index)
    if value is None:
        if not values:
            return
        if idx == "*":
            values.clear()
        elif idx is None:
            del values[0]
        elif isinstance(idx, int) and idx >= 0:
            if idx < len(values):
                del values[idx]
        else:
            raise ValueError("cannot delete an AVP value at a negative index")  # as OpenSIPS
        if not values:
            del ctx.avps[key]  # type: ignore[arg-type]
        return
    value = _script_value(value)
    if values is None:
        values = ctx.avps[key] = []  # type: ignore[index]
    if idx == "*":
        values.clear()
        values.append(value)
        return
    if isinstance(idx, int):
        if not -len(values) <= idx < len(values):
            if not values:
                del ctx.avps[key]  # type: ignore[arg-type]
            raise ValueError(f"AVP index {idx} out of range")
        values[idx] = value
        return
    if len(values) >= MAX_AVP_VALUES:
        raise ValueError(f"too many values in $avp({key}) (limit {MAX_AVP_VALUES})")
    if idx == "append":
        values.append(value)  # $(avp(x)[append]) adds at the end (the oldest position)
    else:
        values.insert(0, value)


# ---------------------------------------------------------------------------------------------------
# script state: $retcode $rc $? $param(name) $err.* $T_reply_code

def get_retcode(ctx: MsgContext, key: Any, index: Any) -> int:
    return ctx.retcode


def get_param(ctx: MsgContext, key: str | None, index: Any) -> Any:
    """$param(name) in event_route (and $param(n) for route parameters, when the runtime stores them
    under their position)."""
    if key in ctx.params:
        return ctx.params[key]
    if key is not None and key.isdigit():
        return ctx.params.get(int(key))  # type: ignore[call-overload]
    return None
