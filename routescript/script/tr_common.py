"""Shared helpers of the core transformations: value and param conversions, fixup builders, the
result-length bound and the NULL pass-through wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


# Bound on what a transformation may build (OpenSIPS TR_BUFFER_SIZE is 65536 bytes).
MAX_RESULT_LEN = 65536


# ---------------------------------------------------------------------------------------------------
# value helpers

def _text(value: Any) -> str:
    """The string form of a value, as OpenSIPS's int2str for integer values."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"unsupported value type {type(value).__name__}")


def _nonempty_text(value: Any, what: str) -> str:
    """uri./param./nameaddr./csv./re. need a non-empty string (OpenSIPS: rs.len <= 0 -> error)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} needs a non-empty string")
    return value


def _to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _int_param(p: Any, what: str) -> int:
    if isinstance(p, bool):
        return int(p)
    if isinstance(p, int):
        return p
    if isinstance(p, str):
        try:
            return int(p.strip())
        except ValueError:
            pass
    raise ValueError(f"{what}: expected an integer, got {p!r}")


def _str_param(p: Any, what: str) -> str:
    """A string param as OpenSIPS reads one: surrounding whitespace skipped, and a quoted literal
    ('x y' or "x y") unquoted so it may hold spaces; a param that is only whitespace is kept."""
    if isinstance(p, int) and not isinstance(p, bool):
        return str(p)
    if isinstance(p, str) and p:
        s = p.strip()
        if not s:
            return p
        if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
            s = s[1:-1]
        if s:
            return s
    raise ValueError(f"{what}: expected a non-empty string, got {p!r}")


def _name_param(p: Any, what: str) -> str:
    """A name (of a parameter, a header...): never blank."""
    s = _str_param(p, what)
    if not s.strip():
        raise ValueError(f"{what}: expected a name, got {p!r}")
    return s


def _char_param(p: Any, what: str) -> str:
    """A one-character param (a separator): OpenSIPS takes the character right after the comma."""
    if isinstance(p, str) and len(p) == 1:
        return p
    s = _str_param(p, what)
    if len(s) != 1:
        raise ValueError(f"{what}: expected one character, got {p!r}")
    return s


def _comma_separator(params: tuple[Any, ...], count: int) -> tuple[Any, ...]:
    """`{s.select,1,,}`: a ',' separator reaches us as two empty params; fold them back into ","."""
    if len(params) == count + 1 and params[-2:] == ("", ""):
        return params[:-2] + (",",)
    return params


def _check_len(text: str) -> str:
    if len(text) > MAX_RESULT_LEN:
        raise ValueError("transformation result too long")
    return text


def _fixup_ints(*names: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A fixup converting the params at the given positions (by name list) to int."""

    def fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(params)
        for i, name in enumerate(names):
            if i < len(out) and name:
                out[i] = _int_param(out[i], name)
        return tuple(out)

    return fixup


def _fixup_strs(*names: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    def fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(params)
        for i, name in enumerate(names):
            if i < len(out) and name:
                out[i] = _name_param(out[i], name)
        return tuple(out)

    return fixup


def _null_passes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """NULL in, NULL out - OpenSIPS's `if (val->flags & PV_VAL_NULL) return 0` in every class."""

    def wrapper(value: Any, *params: Any) -> Any:
        if value is None:
            return None
        return fn(value, *params)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _sep_fixup(first: str, first_is_int: bool, takes_first: bool = True
               ) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """(first[, separator]) - `first` an int or a string; a ',' separator written as `,,` folded."""

    def fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(_comma_separator(params, 2 if takes_first else 1))
        if takes_first:
            out[0] = _int_param(out[0], first) if first_is_int else _name_param(out[0], first)
        if len(out) > (1 if takes_first else 0):
            out[-1] = _char_param(out[-1], "separator")
        return tuple(out)

    return fixup
