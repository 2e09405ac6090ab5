"""What compiled routes call at run time: value semantics of the OpenSIPS language and call sites.

Value semantics (choices where the OpenSIPS docs are silent, kept in one place):
- NULL is None. `x == NULL` is true only for None; None equals nothing else.
- `==`/`!=`/`<`...: two ints compare as ints; an int and a numeric string compare as ints; anything
  else compares as strings (case-sensitive).
- `+`: int + int adds; if either side is a string it concatenates (None counts as "").
  Other arithmetic converts numeric strings to int; a non-number, None or a division by zero gives
  None (NULL). `/` and `%` truncate toward zero, as C (and OpenSIPS) do.
- Truth of a value in a condition: None false, int != 0, str non-empty. Truth of a function or route
  call: its return code > 0 (and 0 stops the script, as `exit` does).
- `=~` searches (POSIX regexec semantics, not anchored) case-insensitively, as OpenSIPS compiles
  script regexes with REG_ICASE; a literal pattern is compiled once at load, a pattern from a
  pseudo-variable is compiled per message through a bounded cache.
- A pseudo-variable embedded in a string prints as "<null>" when it has no value, as OpenSIPS does.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from routescript.sip.errors import SIPError

from .pos import Pos
from .context import MsgContext

log = logging.getLogger("routescript.script")

# ctx.extra key set to True when the script ran `drop` (the core then sends nothing for the message).
DROP_KEY = "routescript.drop"

NULL_TEXT = "<null>"


class ScriptControl(BaseException):
    """Control flow out of a route (not an error: BaseException so `except Exception` never eats it)."""


class ExitScript(ScriptControl):
    """`exit`, `return(0)`, or a function returning 0: stop the whole script."""


class DropScript(ScriptControl):
    """`drop`: stop the script and tell the core to drop the message."""


def was_dropped(ctx: MsgContext) -> bool:
    return bool(ctx.extra.get(DROP_KEY))


# ---- failures ------------------------------------------------------------------------------------------

def _failure_rank(exc: BaseException) -> int:
    """Which failure the core must act on when several happen in one run: the peer's bad message first
    (it decides the reply: 400 + reason, or error_route), then our own bug (500), then a bad value the
    script passed (ValueError/TypeError: already logged with its position, no reply of its own)."""
    if isinstance(exc, SIPError):
        return 3
    if isinstance(exc, (ValueError, TypeError)):
        return 1
    return 2


def note_failure(ctx: MsgContext, exc: BaseException, pos: Pos | None) -> None:
    """Record on the context what a call or statement raised (ctx.failure, ctx.failure_pos); the first
    of the highest rank is kept."""
    old = ctx.failure
    if old is None or _failure_rank(exc) > _failure_rank(old):
        ctx.failure = exc
        ctx.failure_pos = pos


# ---- conversions -------------------------------------------------------------------------------------

def to_str(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else str(v)


def to_text(v: Any) -> str:
    """A value printed inside a string literal."""
    if v is None:
        return NULL_TEXT
    return v if isinstance(v, str) else str(v)


def to_int(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        from .parser import parse_int
        try:
            return parse_int(v)
        except ValueError:
            raise ValueError(f"expected a number, got \"{v}\"") from None
    if v is None:
        raise ValueError("expected a number, got NULL")
    raise ValueError(f"expected a number, got {type(v).__name__}")


def _num(v: Any) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        s = v.strip()
        if s and (s.isdigit() or (s[0] in "+-" and s[1:].isdigit())):
            return int(s)
    return None


def truth(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v != 0
    if isinstance(v, str):
        return v != ""
    if isinstance(v, (list, tuple)):
        return len(v) > 0
    return True


# ---- comparisons -------------------------------------------------------------------------------------

def _casematch(a: str, b: str) -> bool:
    """OpenSIPS compares script strings with str_casematch (route.c comp_s2s, action.c's switch):
    ASCII letters in either case match ("INVITE" == "invite"); other characters must be equal."""
    return a == b or (len(a) == len(b) and a.encode(errors="surrogateescape").lower()
                      == b.encode(errors="surrogateescape").lower())


def eq(a: Any, b: Any) -> bool:
    """`==` (and `switch`/`case`) as OpenSIPS evaluates it: numbers as numbers, strings without regard to
    ASCII case (str_casematch), NULL equal only to NULL."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, int) or isinstance(b, int):
        na, nb = _num(a), _num(b)
        if na is not None and nb is not None:
            return na == nb
    return _casematch(to_str(a), to_str(b))


def ne(a: Any, b: Any) -> bool:
    return not eq(a, b)


def _order(a: Any, b: Any) -> tuple[Any, Any] | None:
    if a is None or b is None:
        return None
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None:
        return na, nb
    # strings order without regard to ASCII case (OpenSIPS str_strcasecmp)
    return (to_str(a).encode(errors="surrogateescape").lower(),
            to_str(b).encode(errors="surrogateescape").lower())


def lt(a: Any, b: Any) -> bool:
    p = _order(a, b)
    return p is not None and p[0] < p[1]


def gt(a: Any, b: Any) -> bool:
    p = _order(a, b)
    return p is not None and p[0] > p[1]


def le(a: Any, b: Any) -> bool:
    p = _order(a, b)
    return p is not None and p[0] <= p[1]


def ge(a: Any, b: Any) -> bool:
    p = _order(a, b)
    return p is not None and p[0] >= p[1]


def compile_script_regex(pattern: str) -> re.Pattern[str]:
    """Raises ValueError with a readable reason."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"bad regular expression \"{pattern}\": {exc}") from None


@lru_cache(maxsize=256)
def _dynamic_regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        log.error("bad regular expression \"%s\" at run time: %s", pattern, exc)
        return None


def dyn_regex(v: Any) -> re.Pattern[str] | None:
    if v is None:
        return None
    return _dynamic_regex(to_str(v))


def match(v: Any, rx: re.Pattern[str] | None) -> bool:
    if v is None or rx is None:
        return False
    return rx.search(to_str(v)) is not None


# ---- arithmetic --------------------------------------------------------------------------------------

def add(a: Any, b: Any) -> Any:
    if isinstance(a, str) or isinstance(b, str):
        return to_str(a) + to_str(b)
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    return None


def _cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


_OPS: dict[str, Callable[[int, int], int]] = {
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _cdiv,
    "%": lambda a, b: a - b * _cdiv(a, b),
    "|": lambda a, b: a | b,
    "&": lambda a, b: a & b,
    "^": lambda a, b: a ^ b,
    "<<": lambda a, b: a << b if 0 <= b <= 64 else 0,
    ">>": lambda a, b: a >> b if b >= 0 else 0,
}


def arith(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        return add(a, b)
    na, nb = _num(a), _num(b)
    if na is None or nb is None:
        return None
    if op in ("/", "%") and nb == 0:
        log.warning("division by zero in script expression")
        return None
    return _OPS[op](na, nb)


def neg(a: Any) -> Any:
    n = _num(a)
    return None if n is None else -n


def bit_not(a: Any) -> Any:
    n = _num(a)
    return None if n is None else ~n


def as_list(v: Any) -> list[Any]:
    """The values a `for (... in $(x[*]))` walks."""
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def pv_values(getter: Callable[[MsgContext, Any, Any], Any], ctx: MsgContext, key: Any,
              limit: int) -> list[Any]:
    """The values a `for (... in $(x[*]))` walks: index 0, 1, ... until the getter gives NULL."""
    out: list[Any] = []
    for i in range(limit):
        v = getter(ctx, key, i)
        if v is None:
            break
        out.append(v)
    return out


def return_value(v: Any) -> int:
    """return(expr): the route's return code; 0 stops the script."""
    try:
        n = to_int(v)
    except ValueError:
        n = -1
    if n == 0:
        raise ExitScript
    return n


def dropped(ctx: MsgContext) -> int:
    """A route ended by `drop`: the core is told (ctx.extra[DROP_KEY]); its return code is 0."""
    ctx.extra[DROP_KEY] = True
    return 0


def skipped_call(ctx: MsgContext) -> int:
    """A call its FunctionSpec.guard skipped: true (1), as the function would have answered."""
    ctx.retcode = 1
    return 1


def normalise_rc(r: Any) -> int:
    if isinstance(r, bool):
        return 1 if r else -1
    if isinstance(r, int):
        return r
    if r is None:
        return 1
    try:
        return int(r)
    except (TypeError, ValueError):
        return -1


# ---- call sites ----------------------------------------------------------------------------------------

Converter = Callable[[Any], Any] | None


class CallSite:
    """One script function call: the impl, its position and how to convert run-time argument values."""

    __slots__ = ("name", "impl", "pos", "converters", "_converts")

    def __init__(self, name: str, impl: Callable[..., Any], pos: Pos,
                 converters: tuple[Converter, ...]) -> None:
        self.name = name
        self.impl = impl
        self.pos = pos
        self.converters = converters
        self._converts = any(converters)

    def _args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(c(a) if c is not None and a is not None else a
                     for c, a in zip(self.converters, args, strict=False))

    def _failed(self, ctx: MsgContext, exc: BaseException) -> int:
        note_failure(ctx, exc, self.pos)
        if isinstance(exc, SIPError):
            log.warning("%s: %s(): bad message: %s", self.pos, self.name, exc)
        elif isinstance(exc, ValueError):
            log.error("%s: %s(): %s", self.pos, self.name, exc)
        else:
            log.error("%s: %s() failed: %s: %s", self.pos, self.name, type(exc).__name__, exc, exc_info=exc)
        return -1

    # __call__ and acall run for every function call of every message: _args and _result inlined.
    def __call__(self, ctx: MsgContext, *args: Any) -> int:
        try:
            r = self.impl(ctx, *(self._args(args) if self._converts else args))
        except Exception as exc:  # noqa: BLE001 - a failing function is false (-1), recorded and logged
            r = self._failed(ctx, exc)
        rc = r if type(r) is int else normalise_rc(r)
        ctx.retcode = rc
        if rc == 0:
            raise ExitScript
        return rc

    async def acall(self, ctx: MsgContext, *args: Any) -> int:
        try:
            r = await self.impl(ctx, *(self._args(args) if self._converts else args))
        except Exception as exc:  # noqa: BLE001 - a failing function is false (-1), recorded and logged
            r = self._failed(ctx, exc)
        rc = r if type(r) is int else normalise_rc(r)
        ctx.retcode = rc
        if rc == 0:
            raise ExitScript
        return rc


class TransformSite:
    """One {transformation} in a pseudo-variable: fn with literal params fixed at load, or params that
    are pseudo-variables (read per message, then the fixup applied)."""

    __slots__ = ("fn", "params", "dynamic", "fixup", "name", "pos")

    def __init__(self, name: str, fn: Callable[..., Any], params: tuple[Any, ...], dynamic: bool,
                 fixup: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None, pos: Pos) -> None:
        self.name, self.fn, self.params = name, fn, params
        self.dynamic, self.fixup, self.pos = dynamic, fixup, pos

    def __call__(self, ctx: MsgContext, value: Any) -> Any:
        try:
            params = self.params
            if self.dynamic:
                params = tuple(p(ctx) if callable(p) else p for p in params)
                if self.fixup is not None:
                    params = self.fixup(params)
            return self.fn(value, *params)
        except (ValueError, TypeError, LookupError, ArithmeticError) as exc:
            log.debug("%s: {%s} failed on %r: %s", self.pos, self.name, value, exc)
            return None


async def call_route(ctx: MsgContext, fn: Callable[[MsgContext], Any], args: tuple[Any, ...] | None) -> int:
    """route(name[, args]): args become $param(1).. for the called route only."""
    if args is None:
        rc = await fn(ctx)
    else:
        saved = ctx.params
        ctx.params = {str(i): v for i, v in enumerate(args, 1)}
        try:
            rc = await fn(ctx)
        finally:
            ctx.params = saved
    ctx.retcode = rc
    return int(rc)


def loop_limit(pos: Pos, limit: int) -> None:
    log.error("%s: loop stopped after %d iterations (max_while_loops)", pos, limit)


def assert_failed(pos: Pos, message: str | None, abort: bool = False) -> None:
    """A false assert(): logged, then the script ends - or, with abort_on_assert, the process aborts
    as OpenSIPS's does (a core dump; the supervisor or systemd starts it again)."""
    text = "assertion failed" if message is None else f"assertion failed: {message}"  # None: assert(expr)
    if abort:
        log.critical("%s: %s (abort_on_assert: aborting)", pos, text)
        logging.shutdown()
        os.abort()
    log.error("%s: %s", pos, text)
    raise ExitScript
