"""Call code generation: module function calls (argument counts, kinds, fixups of literal arguments,
route-kind restrictions) and route(x) calls -> Python source text."""

from __future__ import annotations

import ast as pyast
from collections.abc import Callable
from typing import Any

from . import ast
from . import runtime as rt
from .pos import Pos
from .compile_expr import _ExprGen, _Failed
from .context import REQUEST_ROUTE
from .grammar import ROUTE_KEYWORD, route_label
from .parse_tree import parse_int
from .registry import ArgSpec, FunctionSpec, PVarRef, Registry


class _CallGen(_ExprGen):
    def route_call(self, c: ast.RouteCall) -> str:
        key = (REQUEST_ROUTE, c.name)
        args = [self.value(a) if a is not None else "None" for a in c.args]
        if key not in self.defs:
            self.error(c.pos, f"route({c.name}): there is no route[{c.name}]")
            raise _Failed
        arg_code = f"({', '.join(args)},)" if args else "None"
        return f"(await _rt.call_route(ctx, {self.fn_names[key]}, {arg_code}))"

    def route_statement(self, c: ast.RouteCall) -> str:
        """route(x) as a statement: without arguments the route is awaited directly (what call_route
        does, less its frame); with arguments call_route sets and restores $param."""
        if c.args:
            return self.route_call(c)
        self.route_call(c)   # checks the target (an error, _Failed, when it has none)
        return f"ctx.retcode = await {self.fn_names[(REQUEST_ROUTE, c.name)]}(ctx)"

    def call(self, c: ast.Call) -> str:
        """The code of a call as an expression (its return code) - through its CallSite."""
        bound = self._bind_call(c)
        if bound is None:
            return "None"
        return self._through_site(c, *bound)

    def _through_site(self, c: ast.Call, spec: FunctionSpec, site: rt.CallSite, codes: list[str]) -> str:
        self._note_wait(spec)
        name = self.bind(site, "_c")
        args = "".join(", " + a for a in codes)
        code = f"(await {name}.acall(ctx{args}))" if spec.is_async else f"{name}(ctx{args})"
        predicate = self._guard(c, spec)
        if predicate is not None:
            return f"({code} if {predicate}() else _rt.skipped_call(ctx))"
        return code

    def call_value(self, c: ast.Call, ind: int) -> str:
        """The code of a call's return code, for a statement at indent `ind` (a call statement, an if
        on a call), left in `_rc` by statements emitted here, before it: a guard skips the call inline;
        a function that converts none of its arguments is called directly, bound at load - doing what
        CallSite.__call__ does (failure recorded and -1, the return code normalised into ctx.retcode,
        0 stops the script); a call with run-time conversions goes through its CallSite."""
        bound = self._bind_call(c)
        if bound is None:
            return "None"
        spec, site, codes = bound
        self._note_wait(spec)
        predicate = self._guard(c, spec)
        at = ind
        if predicate is not None:   # skipped: its arguments not even evaluated, true (1)
            self.emit(ind, f"if not {predicate}():", c.pos)
            self.emit(ind + 1, "ctx.retcode = _rc = 1", c.pos)
            self.emit(ind, "else:", c.pos)
            at = ind + 1
        if any(site.converters):   # converted in its CallSite, inside the call's failure handling
            site_name = self.bind(site, "_c")
            passed = "".join(", " + a for a in codes)
            self.emit(at, f"_rc = (await {site_name}.acall(ctx{passed}))" if spec.is_async else
                      f"_rc = {site_name}(ctx{passed})", c.pos)
            return "_rc"
        args = []
        for code in codes:   # evaluated before the call and outside its try, as for a CallSite
            if _plain(code):
                args.append(code)
            else:
                self.counter += 1
                temp = f"_v{self.counter}"
                self.emit(at, f"{temp} = {code}", c.pos)
                args.append(temp)
        impl, name = self.bind(site.impl, "_f"), self.bind(site, "_c")
        call = f"{'await ' if spec.is_async else ''}{impl}(ctx{''.join(', ' + a for a in args)})"
        self.emit(at, "try:", c.pos)
        self.emit(at + 1, f"_rc = {call}", c.pos)
        self.emit(at, "except Exception as _exc:", c.pos)
        self.emit(at + 1, f"_rc = {name}._failed(ctx, _exc)", c.pos)
        self.emit(at, "if type(_rc) is not int:", c.pos)
        self.emit(at + 1, "_rc = _rt.normalise_rc(_rc)", c.pos)
        self.emit(at, "ctx.retcode = _rc", c.pos)
        self.emit(at, "if _rc == 0:", c.pos)
        self.emit(at + 1, "raise _Exit", c.pos)
        return "_rc"

    def _note_wait(self, spec: FunctionSpec) -> None:
        """An async function makes the route calling it one that may wait (CompiledScript.never_wait)."""
        if spec.is_async and self._current is not None:
            self.awaiting.add((self._current.kind, self._current.name))

    def _guard(self, c: ast.Call, spec: FunctionSpec) -> str | None:
        """The bound name of the call's guard predicate (FunctionSpec.guard), or None."""
        if spec.guard is None:
            return None
        predicate = spec.guard(tuple(_literal(a) for a in c.args))
        return self.bind(predicate, "_g") if predicate is not None else None

    def _bind_call(self, c: ast.Call) -> tuple[FunctionSpec, rt.CallSite, list[str]] | None:
        """Check a call against its FunctionSpec: (spec, its CallSite, the code of each argument), or
        None without a registry (check_syntax: the arguments are still checked). Raises _Failed."""
        # Arguments are checked even when the function is unknown, to report everything at once.
        if self.registry is None:
            for a in c.args:
                if a is not None and not isinstance(a, ast.Ident):
                    try:
                        self.value(a)
                    except _Failed:
                        pass
            return None
        spec = self.registry.functions.get(c.name)
        if spec is None:
            if c.name not in self.registry.unreported_functions:   # else its module's error says it
                self.error(c.pos, unknown_function_message(c.name, self.registry))
            raise _Failed
        self._check_route_kind(c, spec)
        n = len(c.args)
        if n > spec.max_args:
            most = "no" if spec.max_args == 0 else f"at most {spec.max_args}"
            self.error(c.pos, f"{c.name}() takes {most} argument{'s' if spec.max_args != 1 else ''} "
                              f"({n} given)")
            raise _Failed
        if n < spec.min_args:
            self.error(c.pos, f"{c.name}() needs {'at least ' if spec.max_args > spec.min_args else ''}"
                              f"{spec.min_args} argument{'s' if spec.min_args != 1 else ''} ({n} given)")
            raise _Failed
        codes: list[str] = []
        converters: list[Any] = []
        failed = False
        for i, argspec in enumerate(spec.args):
            arg = c.args[i] if i < n else None
            try:
                code, conv = self.argument(c, i, argspec, arg)
            except _Failed:
                failed = True
                continue
            codes.append(code)
            converters.append(conv)
        if failed:
            raise _Failed
        return spec, rt.CallSite(c.name, spec.impl, c.pos, tuple(converters)), codes

    def _check_route_kind(self, c: ast.Call, spec: FunctionSpec) -> None:
        if spec.routes is None or self._current is None:
            return
        key = (self._current.kind, self._current.name)
        for kind in sorted(self.kinds.get(key, {self._current.kind})):
            if kind in spec.routes:
                continue
            msg = f"{c.name}() cannot be used in {route_label(kind, None)}"
            if key[0] == REQUEST_ROUTE and key[1] is not None and kind != REQUEST_ROUTE:
                msg += f" ({route_label(*key)} is called from one)"
            self.error(c.pos, msg)
            return

    def argument(self, c: ast.Call, i: int, spec: ArgSpec, arg: Any) -> tuple[str, Any]:
        """(code of the run-time value, converter or None)."""
        what = f"argument {i + 1} of {c.name}()"
        if arg is None:
            if not spec.optional:
                self.error(c.pos, f"{what} is required")
                raise _Failed
            return "None", None
        pos = getattr(arg, "pos", c.pos)
        kind = spec.kind
        if kind == "pvar":
            pv = arg
            if isinstance(arg, ast.StrLit) and len(arg.parts) == 1 and isinstance(arg.parts[0], ast.PVar):
                pv = arg.parts[0]
            if not isinstance(pv, ast.PVar):
                self.error(pos, f"{what} must be a pseudo-variable (like $var(x) or $avp(y))")
                raise _Failed
            pspec = self.resolve(pv)
            assert pspec is not None
            if pspec.setter is None:
                self.error(pos, f"{what}: ${pv.name} is read-only, a writable pseudo-variable is needed")
                raise _Failed
            index = pv.index if not isinstance(pv.index, ast.PVar) else None
            ref = PVarRef(pspec, pv.key, index, pv.text)
            return self._fixed(ref, spec, pos, what), None
        constant, value = self._constant(arg)
        if spec.static and not constant:
            self.error(pos, f"{what} must be written out (a name, number or plain string): it is read "
                            "once at load time, so a pseudo-variable or expression cannot stand there")
            raise _Failed
        if kind == "route":
            if not constant or value is None:
                self.error(pos, f"{what} must be a route name")
                raise _Failed
            name = str(value)
            self._check_route_target(name, spec, pos, what)
            return self._fixed(name, spec, pos, what), None
        if constant:
            try:
                converted = self._convert_literal(kind, value)
            except ValueError as exc:
                self.error(pos, f"{what}: {exc}")
                raise _Failed from None
            return self._fixed(converted, spec, pos, what), None
        if kind == "regex":
            code = self.value(arg)
            conv = _chain(_regex_conv, spec.fixup)
            return code, conv
        code = self.value(arg)
        base = {"str": rt.to_str, "int": rt.to_int, "any": None}.get(kind)
        if kind == "str" and isinstance(arg, ast.StrLit):
            base = None   # a string with pseudo-variables is joined into a str already (string())
        return code, _chain(base, spec.fixup)

    def _fixed(self, value: Any, spec: ArgSpec, pos: Pos, what: str) -> str:
        if spec.fixup is not None:
            try:
                value = spec.fixup(value)
            except ValueError as exc:
                self.error(pos, f"{what}: {exc}")
                raise _Failed from None
        if (isinstance(value, (int, str)) and not isinstance(value, bool)) or value is None:
            return repr(value)
        return self.bind(value, "_a")

    @staticmethod
    def _constant(arg: Any) -> tuple[bool, Any]:
        if isinstance(arg, ast.StrLit) and arg.is_constant:
            return True, arg.value
        if isinstance(arg, ast.IntLit):
            return True, arg.value
        if isinstance(arg, ast.Ident):
            return True, arg.name
        if isinstance(arg, ast.NullLit):
            return True, None
        return False, None

    @staticmethod
    def _convert_literal(kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "str":
            return value if isinstance(value, str) else str(value)
        if kind == "int":
            if isinstance(value, int):
                return value
            try:
                return parse_int(str(value))
            except ValueError:
                raise ValueError(f"expected a number, got \"{value}\"") from None
        if kind == "regex":
            return rt.compile_script_regex(str(value))
        return value

    def _check_route_target(self, name: str, spec: ArgSpec, pos: Pos, what: str) -> None:
        # ArgSpec.name may name the route kind the argument refers to ("failure", "onreply", "branch",
        # "request"...); otherwise any route of that name will do.
        kinds = [k for k in ROUTE_KEYWORD if spec.name in (k, ROUTE_KEYWORD[k])]
        if kinds:
            if (kinds[0], name) not in self.defs:
                self.error(pos, f"{what}: there is no {route_label(kinds[0], name)}")
                raise _Failed
        elif not any(n == name for (_, n) in self.defs):
            self.error(pos, f"{what}: no route is named '{name}'")
            raise _Failed


def unknown_function_message(name: str, registry: Registry) -> str:
    """What the checker says of a function the registry lacks. An OpenSIPS function names its module
    (opensips_functions, from OpenSIPS's own export tables) and whether routescript has it, so the user
    reads "routescript does not implement it" rather than "load something" when that is the truth."""
    from .opensips_functions import OPENSIPS_FUNCTIONS

    owners = OPENSIPS_FUNCTIONS.get(name)
    if owners is None:
        import difflib
        close = difflib.get_close_matches(name, list(registry.functions), n=1)
        hint = f" (did you mean {close[0]}()?)" if close else " (is its module loaded?)"
        return f"unknown function {name}(){hint}"
    loaded = [m for m in owners if m in registry.loaded_modules]
    if loaded:
        module = loaded[0]
        if registry.loaded_modules[module]:
            return f"{name}() is {_a(module)} function that routescript does not implement"
        return f"{name}() is {_a(module)} function, and routescript does not implement {module}"
    available = registry.module_available or (lambda _m: False)
    module = next((m for m in owners if available(m)), owners[0])
    if available(module):
        return f"{name}() is {_a(module)} function: loadmodule \"{module}.so\""
    return (f"{name}() is {_a(module)} function: loadmodule \"{module}.so\" - a module routescript "
            "does not implement")


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeio" else "a ") + word   # a usrloc, a uac: said "you"


def _regex_conv(v: Any) -> Any:
    rx = rt.dyn_regex(v)
    if rx is None:
        raise ValueError(f"bad regular expression \"{v}\"")
    return rx


def _chain(first: Callable[[Any], Any] | None,
           second: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    if first is None:
        return second
    if second is None:
        return first
    return lambda v: second(first(v))


def _plain(code: str) -> bool:
    """Code that is a bound name or a Python literal: nothing to evaluate, nothing that can raise."""
    if code.isidentifier():
        return True
    try:
        pyast.literal_eval(code)
    except (ValueError, SyntaxError):
        return False
    return True


def _literal(arg: Any) -> Any:
    """The value of a plain literal argument (a number, a string without pseudo-variables), else None."""
    if isinstance(arg, ast.IntLit):
        return arg.value
    if isinstance(arg, ast.StrLit) and all(isinstance(p, str) for p in arg.parts):
        return arg.value
    return None
