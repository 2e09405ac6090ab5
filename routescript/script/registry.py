"""What a script can name: functions, pseudo-variables and transformations.

The core registers its own entries here and each loaded module registers its exports the same way
(OpenSIPS's cmd_export_t, pv_export_t and transformation tables). The compiler resolves every name
at load time through a `Registry`, so an unknown name is a `file:line:col` error, never a runtime surprise.
This module imports nothing of ours but the context; it never imports a module or the database.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .context import MsgContext
from .flags import FlagNames

# Argument kinds of a script function:
#   "str"   - a string; may embed pseudo-variables ("$fu to $ru"), expanded per call; the impl gets str
#   "int"   - an integer literal, or a pseudo-variable/expression whose value is converted; the impl gets int
#   "pvar"  - a writable pseudo-variable reference; the impl gets a PVarRef (get/set with the context)
#   "regex" - a regular expression; a literal is compiled at load time; the impl gets re.Pattern
#   "route" - the name of a route; checked at load time; the impl gets the name as str
#   "any"   - whatever the expression evaluates to (str, int or None)
ArgKind = Literal["str", "int", "pvar", "regex", "route", "any"]


@dataclass(frozen=True, slots=True)
class ArgSpec:
    kind: ArgKind = "str"
    optional: bool = False
    name: str = ""
    # Load-time check/conversion of a *literal* argument (OpenSIPS fixup): gets the literal value, returns
    # the value to pass at run time, raises ValueError("why") which the compiler reports at the argument.
    fixup: Callable[[Any], Any] | None = None
    # The argument must be written out in the script (OpenSIPS CMD_PARAM_STATIC: a flag name, log()'s
    # text): a pseudo-variable or expression there is a load-time error, so `fixup` sees every value.
    static: bool = False


# A function implementation: impl(ctx, *args) -> int, or an awaitable of int.
# Return values follow OpenSIPS truth: > 0 true, < 0 false, 0 stops the script (like exit).
FunctionImpl = Callable[..., "int | Awaitable[int]"]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    impl: FunctionImpl
    args: tuple[ArgSpec, ...] = ()
    routes: frozenset[str] | None = None  # route kinds where it may be called; None = every kind
    module: str = "core"
    is_async: bool = False  # set by `function()` below from the impl; the compiler awaits only these
    # Load-time, optional: given the call's literal argument values (None where an argument is not a
    # plain literal), return a predicate the compiled code runs before each call, or None. When the
    # predicate answers False the call is skipped - its arguments are not even evaluated - and counts
    # as returning 1. xlog uses it: a line below the log level costs no pseudo-variable expansion.
    guard: Callable[[tuple[Any, ...]], Callable[[], bool] | None] | None = None

    @property
    def min_args(self) -> int:
        return sum(1 for a in self.args if not a.optional)

    @property
    def max_args(self) -> int:
        return len(self.args)


def function(
    name: str,
    impl: FunctionImpl,
    *args: ArgSpec,
    routes: Iterable[str] | None = None,
    module: str = "core",
    guard: Callable[[tuple[Any, ...]], Callable[[], bool] | None] | None = None,
) -> FunctionSpec:
    """Build a FunctionSpec, noting whether the impl is a coroutine function."""
    import inspect

    return FunctionSpec(
        name=name,
        impl=impl,
        args=tuple(args),
        routes=frozenset(routes) if routes is not None else None,
        module=module,
        is_async=inspect.iscoroutinefunction(impl),
        guard=guard,
    )


# Pseudo-variable access. `name` is the class (e.g. "ru", "var", "hdr"); `key` is what stands in the
# parentheses ($var(x) -> "x", $hdr(Event) -> "Event"), or None; `index` is the [n] of $(hdr(Via)[1])
# (None = default, -1 = last, "*" = all, as OpenSIPS has it).
PVGetter = Callable[[MsgContext, "str | None", "int | str | None"], Any]
PVSetter = Callable[[MsgContext, "str | None", "int | str | None", Any], None]


@dataclass(frozen=True, slots=True)
class PVarSpec:
    name: str
    getter: PVGetter
    setter: PVSetter | None = None  # None = read-only; assigning it is a load-time error
    key: Literal["none", "required", "optional"] = "none"
    # Load-time check of the key (e.g. a header name); raises ValueError("why").
    check_key: Callable[[str], None] | None = None
    module: str = "core"
    # Named indexes it takes in assignments ($(avp(x)[append]) = ...), passed to the setter as the index.
    index_words: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PVarRef:
    """A resolved pseudo-variable reference, as passed to "pvar" function arguments."""

    spec: PVarSpec
    key: str | None = None
    index: int | str | None = None
    text: str = ""  # as written in the script, for messages

    def get(self, ctx: MsgContext) -> Any:
        return self.spec.getter(ctx, self.key, self.index)

    def set(self, ctx: MsgContext, value: Any) -> None:
        if self.spec.setter is None:
            raise TypeError(f"{self.text or '$' + self.spec.name} is read-only")
        self.spec.setter(ctx, self.key, self.index, value)


# A transformation: fn(value, *params) -> value. Params are literal strings/ints from the script
# ({s.substr,1,2} -> (1, 2)); `nparams` bounds them. A value the transformation cannot handle raises
# ValueError; OpenSIPS then makes the whole expression fail (NULL) - the compiler does the same.
@dataclass(frozen=True, slots=True)
class TransformSpec:
    name: str  # "s.len", "uri.user", "re.subst", ...
    fn: Callable[..., Any]
    min_params: int = 0
    max_params: int = 0
    # Load-time conversion of the literal params (e.g. compile the re.subst expression); raises ValueError.
    fixup: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
    module: str = "core"


@dataclass(slots=True)
class Registry:
    """Everything a script may name. One per loaded configuration."""

    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    pvars: dict[str, PVarSpec] = field(default_factory=dict)
    transforms: dict[str, TransformSpec] = field(default_factory=dict)
    # For the checker's word on a function it cannot find (compile_call): every module the script
    # loads -> whether routescript implements it; whether routescript has a module it does not load;
    # the functions of loaded modules that failed to load (already reported at their loadmodule).
    loaded_modules: dict[str, bool] = field(default_factory=dict)
    module_available: Callable[[str], bool] | None = None
    unreported_functions: set[str] = field(default_factory=set)
    # The flag names of this configuration (setflag(NAT) -> a bit), kept across reload_routes so a
    # name keeps its bit while messages are in flight.
    msg_flags: FlagNames = field(default_factory=lambda: FlagNames("message"))
    branch_flags: FlagNames = field(default_factory=lambda: FlagNames("branch"))

    def add_function(self, spec: FunctionSpec) -> None:
        self.functions[spec.name] = spec

    def add_pvar(self, spec: PVarSpec) -> None:
        self.pvars[spec.name] = spec

    def add_transform(self, spec: TransformSpec) -> None:
        self.transforms[spec.name] = spec

    def merge(self, other: Registry) -> None:
        self.functions.update(other.functions)
        self.pvars.update(other.pvars)
        self.transforms.update(other.transforms)


def compile_regex(pattern: str) -> re.Pattern[str]:
    """OpenSIPS regexes are POSIX extended; Python's re covers what scripts use. Raises ValueError."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
