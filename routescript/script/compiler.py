"""AST -> Python coroutine functions, once per load.

Each route becomes the source of one `async def` (generated text, compile()d once); the objects it needs
(function implementations, pseudo-variable getters/setters, regexes compiled at load, literal arguments
after their fixup) are bound by name into the module namespace of that source. Nothing walks the tree
per message.

Every check happens here, and all problems are reported together (ScriptError): unknown functions,
argument counts and kinds (ArgSpec.fixup applied to literal arguments), functions used in a route kind
they do not allow (FunctionSpec.routes; a `route[x]` is checked for every kind of route it is called
from), route(x) targets, duplicate routes, regex literals, unknown or read-only pseudo-variables, keys,
transformations and their parameter counts, `break` outside switch/loops.

With registry=None (check_syntax) the names of functions, pseudo-variables and transformations are not
resolved; everything else is checked.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Awaitable, Callable
from typing import Any

from routescript.sip.errors import SIPError

from . import ast
from . import runtime as rt
from .ast import Pos
from .context import ERROR_ROUTE, EVENT_ROUTE, REQUEST_ROUTE, STARTUP_ROUTE, TIMER_ROUTE, MsgContext
from .diagnostics import Diagnostic, ScriptError, SourceLines
from .parser import ROUTE_KEYWORD, parse_int
from .registry import ArgSpec, FunctionSpec, PVarRef, PVarSpec, Registry

log = logging.getLogger("routescript.script")

RouteFn = Callable[[MsgContext], Awaitable[int]]
DEFAULT_MAX_WHILE_LOOPS = 10000  # OpenSIPS's max_while_loops default


def route_label(kind: str, name: str | None) -> str:
    kw = ROUTE_KEYWORD.get(kind, kind)
    return f"{kw}[{name}]" if name is not None else kw


class CompiledScript:
    """The routes of one load, ready to run.

    routes:       {(kind, name): async fn(ctx) -> int}; the main request route is (REQUEST_ROUTE, None).
                  These entry functions never raise for exit/drop: exit gives 0, drop gives 0 and sets
                  ctx.extra[DROP_KEY] = True; an unexpected exception is logged with file:line:col,
                  recorded in ctx.failure / ctx.failure_pos (runtime.note_failure) and gives -1.
                  A function call that raises is recorded the same way, counts as -1, and the
                  script goes on.
    timer_routes: [(name, interval_seconds, fn)]; event_routes: {E_NAME: fn};
    startup_route, error_route: fn or None.
    source:       the generated Python source (for debugging).
    """

    def __init__(self, routes: dict[tuple[str, str | None], RouteFn],
                 defs: dict[tuple[str, str | None], ast.RouteDef], source: str) -> None:
        self.routes = routes
        self.defs = defs
        self.source = source
        self.timer_routes: list[tuple[str, int, RouteFn]] = [
            (str(d.name), int(d.interval or 0), routes[k]) for k, d in defs.items() if d.kind == TIMER_ROUTE]
        self.event_routes: dict[str, RouteFn] = {
            str(d.name): routes[k] for k, d in defs.items() if d.kind == EVENT_ROUTE}
        self.event_async: dict[str, bool] = {
            str(d.name): "async" in d.params for d in defs.values() if d.kind == EVENT_ROUTE}
        self.startup_route = routes.get((STARTUP_ROUTE, None))
        self.error_route = routes.get((ERROR_ROUTE, None))

    def get(self, kind: str, name: str | None = None) -> RouteFn | None:
        if kind == REQUEST_ROUTE and name in ("0", "main"):
            name = None
        return self.routes.get((kind, name))

    def has(self, kind: str, name: str | None = None) -> bool:
        return self.get(kind, name) is not None

    async def run(self, kind: str, name: str | None, ctx: MsgContext) -> int:
        """Run a route for ctx (setting ctx.route_type = kind). Returns the route's return code: 0 after
        exit/drop (drop also sets ctx.extra[DROP_KEY]), 1 when it ends without return, -1 after an
        unexpected error (logged with its position). A route the script does not define does nothing
        and returns 1."""
        fn = self.get(kind, name)
        if fn is None:
            return 1
        ctx.route_type = kind
        return await fn(ctx)


# ---------------------------------------------------------------------------------------------------

def compile_script(script: ast.Script, registry: Registry, *, max_while_loops: int = DEFAULT_MAX_WHILE_LOOPS,
                   enable_asserts: bool = False) -> CompiledScript:
    """Check and compile every route of `script` against `registry`. Raises ScriptError with every problem."""
    gen = _Gen(script, registry, max_while_loops, enable_asserts)
    gen.generate()
    if gen.errors:
        raise ScriptError(sorted(gen.errors, key=lambda d: (d.pos.file, d.pos.line, d.pos.col)))
    return gen.build()


def check_script(script: ast.Script) -> list[Diagnostic]:
    """The checks that need no module: routes, regexes, break placement, duplicate routes."""
    gen = _Gen(script, None, DEFAULT_MAX_WHILE_LOOPS, False)
    gen.generate()
    return sorted(gen.errors, key=lambda d: (d.pos.file, d.pos.line, d.pos.col))


class _Failed(Exception):
    """An expression that could not be compiled (already reported)."""


_CMP = {"==": "_rt.eq", "!=": "_rt.ne", "<": "_rt.lt", ">": "_rt.gt", "<=": "_rt.le", ">=": "_rt.ge"}
_MAX_ERRORS = 200


class _Gen:
    def __init__(self, script: ast.Script, registry: Registry | None, max_loops: int, asserts: bool) -> None:
        self.script = script
        self.registry = registry
        self.max_loops = max_loops
        self.asserts = asserts
        self.errors: list[Diagnostic] = []
        self.sources = SourceLines()
        self.ns: dict[str, Any] = {"_rt": rt, "_Exit": rt.ExitScript, "_Drop": rt.DropScript}
        self.lines: list[str] = []
        self.line_pos: list[Pos | None] = []
        self.counter = 0
        self.defs: dict[tuple[str, str | None], ast.RouteDef] = {}
        self.fn_names: dict[tuple[str, str | None], str] = {}
        self.kinds: dict[tuple[str, str | None], set[str]] = {}
        self._current: ast.RouteDef | None = None
        self._loop_depth = 0
        self._pv_cache: dict[tuple[Any, ...], str] = {}
        for f, text in script.texts.items():
            self.sources.add(f, text)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def error(self, pos: Pos, message: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(self.sources.diag(pos, message))

    def bind(self, obj: Any, prefix: str = "_k") -> str:
        self.counter += 1
        name = f"{prefix}{self.counter}"
        self.ns[name] = obj
        return name

    def emit(self, indent: int, text: str, pos: Pos | None) -> None:
        self.lines.append("    " * indent + text)
        self.line_pos.append(pos)

    # -- driver --------------------------------------------------------------------------------------
    def generate(self) -> None:
        for r in self.script.routes:
            key = (r.kind, r.name)
            if key in self.defs:
                first = self.defs[key].pos
                self.error(r.pos, f"{route_label(*key)} is defined twice (first at {first})")
                continue
            self.defs[key] = r
            self.fn_names[key] = f"_r{len(self.fn_names)}"
        self._reachable_kinds()
        for key, r in self.defs.items():
            self._current = r
            self._loop_depth = 0
            self.emit(0, f"async def {self.fn_names[key]}(ctx):", r.pos)
            start = len(self.lines)
            self.stmts(r.body.stmts, 1)
            self.emit(1, "return 1", None)
            if len(self.lines) == start:
                self.emit(1, "pass", None)
            self.emit(0, "", None)

    def _reachable_kinds(self) -> None:
        """Route kinds each route runs in: a route[x] runs in the kinds of every route calling it."""
        calls: dict[tuple[str, str | None], set[str]] = {}
        for key, r in self.defs.items():
            calls[key] = set(_route_calls(r.body))
            if r.kind == REQUEST_ROUTE and r.name is not None:
                self.kinds[key] = set()
            else:
                self.kinds[key] = {r.kind}
        changed, rounds = True, 0
        while changed and rounds <= len(self.defs) + 1:
            changed, rounds = False, rounds + 1
            for key, targets in calls.items():
                for t in targets:
                    tk = (REQUEST_ROUTE, t)
                    if tk in self.kinds and not self.kinds[key] <= self.kinds[tk]:
                        self.kinds[tk] |= self.kinds[key]
                        changed = True
        for ks in self.kinds.values():
            if not ks:
                ks.add(REQUEST_ROUTE)

    def build(self) -> CompiledScript:
        source = "\n".join(self.lines) + "\n"
        filename = f"<routescript {self.script.files[0] if self.script.files else 'script'}>"
        code = compile(source, filename, "exec")
        module = types.ModuleType("routescript_compiled")
        module.__dict__.update(self.ns)
        exec(code, module.__dict__)  # noqa: S102 - the route script compiled by this class, checked at load
        routes: dict[tuple[str, str | None], RouteFn] = {}
        for key, fname in self.fn_names.items():
            routes[key] = _entry(module.__dict__[fname], route_label(*key), filename, self.line_pos)
        return CompiledScript(routes, dict(self.defs), source)

    # -- statements ----------------------------------------------------------------------------------
    def stmts(self, stmts: tuple[Any, ...], ind: int) -> None:
        for s in stmts:
            try:
                self.stmt(s, ind)
            except _Failed:
                pass

    def body(self, s: Any, ind: int) -> None:
        before = len(self.lines)
        if isinstance(s, ast.Block):
            self.stmts(s.stmts, ind)
        else:
            try:
                self.stmt(s, ind)
            except _Failed:
                pass
        if len(self.lines) == before:
            self.emit(ind, "pass", None)

    def stmt(self, s: Any, ind: int) -> None:
        if isinstance(s, ast.Block):
            self.stmts(s.stmts, ind)
        elif isinstance(s, ast.If):
            self._if(s, ind, "if")
        elif isinstance(s, ast.Assign):
            self.assign(s, ind)
        elif isinstance(s, ast.Call):
            self.emit(ind, self.call(s), s.pos)
        elif isinstance(s, ast.RouteCall):
            self.emit(ind, self.route_call(s), s.pos)
        elif isinstance(s, ast.Return):
            if s.value is None:
                self.emit(ind, "return 1", s.pos)
            elif isinstance(s.value, ast.IntLit):
                self.emit(ind, "raise _Exit" if s.value.value == 0 else f"return {s.value.value}", s.pos)
            else:
                self.emit(ind, f"return _rt.return_value({self.value(s.value)})", s.pos)
        elif isinstance(s, ast.Exit):
            self.emit(ind, "raise _Exit", s.pos)
        elif isinstance(s, ast.Drop):
            self.emit(ind, "raise _Drop", s.pos)
        elif isinstance(s, ast.Break):
            if self._loop_depth == 0:
                self.error(s.pos, "'break' outside a switch or a loop (use 'return' to leave a route)")
            self.emit(ind, "break", s.pos)
        elif isinstance(s, ast.Switch):
            self.switch(s, ind)
        elif isinstance(s, ast.While):
            self.while_(s, ind)
        elif isinstance(s, ast.ForEach):
            self.foreach(s, ind)
        elif isinstance(s, ast.Async):
            self.async_(s, ind)
        elif isinstance(s, ast.Launch):
            self.error(s.pos, "launch() is not supported by routescript")
            self.call(s.call)  # still check the call itself
        elif isinstance(s, ast.Assert):
            cond = self.cond(s.cond)
            if self.asserts:
                self.emit(ind, f"if not ({cond}): _rt.assert_failed({self.bind(s.pos, '_p')}, "
                               f"{s.message!r})", s.pos)
        else:  # pragma: no cover - the parser makes no other node
            self.error(getattr(s, "pos", Pos("?", 1, 1)), f"unsupported statement {type(s).__name__}")

    def _if(self, s: ast.If, ind: int, kw: str) -> None:
        try:
            cond = self.cond(s.cond)
        except _Failed:
            cond = "False"
        self.emit(ind, f"{kw} {cond}:", s.pos)
        self.body(s.then, ind + 1)
        if s.orelse is None:
            return
        if isinstance(s.orelse, ast.If):
            self._if(s.orelse, ind, "elif")
        else:
            self.emit(ind, "else:", s.orelse.pos if hasattr(s.orelse, "pos") else s.pos)
            self.body(s.orelse, ind + 1)

    def switch(self, s: ast.Switch, ind: int) -> None:
        n = self.bind(None, "_u")
        sv, iv = f"_sv{n}", f"_si{n}"
        self.emit(ind, f"{sv} = {self.value(s.subject)}", s.pos)
        default_at = None
        first = True
        seen: dict[Any, Pos] = {}
        for i, c in enumerate(s.cases):
            if c.is_default:
                if default_at is not None:
                    self.error(c.pos, "switch has two 'default' branches")
                default_at = i
                continue
            if c.value in seen:
                self.error(c.pos, f"case {c.value!r} appears twice in this switch (first at {seen[c.value]})")
            seen.setdefault(c.value, c.pos)
            self.emit(ind, f"{'if' if first else 'elif'} _rt.eq({sv}, {c.value!r}): {iv} = {i}", c.pos)
            first = False
        fallback = default_at if default_at is not None else len(s.cases)
        if first:
            self.emit(ind, f"{iv} = {fallback}", s.pos)
        else:
            self.emit(ind, f"else: {iv} = {fallback}", s.pos)
        # One pass of a loop, so that `break` leaves the switch; cases fall through as in C.
        self.emit(ind, "while True:", s.pos)
        self._loop_depth += 1
        for i, c in enumerate(s.cases):
            self.emit(ind + 1, f"if {iv} <= {i}:", c.pos)
            before = len(self.lines)
            self.stmts(c.body, ind + 2)
            if len(self.lines) == before:
                self.emit(ind + 2, "pass", None)
        self._loop_depth -= 1
        self.emit(ind + 1, "break", None)

    def while_(self, s: ast.While, ind: int) -> None:
        n = self.bind(None, "_u")
        cnt = f"_n{n}"
        try:
            cond = self.cond(s.cond)
        except _Failed:
            cond = "False"
        self.emit(ind, f"{cnt} = 0", s.pos)
        self.emit(ind, f"while {cond}:", s.pos)
        self.emit(ind + 1, f"{cnt} += 1", s.pos)
        self.emit(ind + 1, f"if {cnt} > {self.max_loops}:", s.pos)
        self.emit(ind + 2, f"_rt.loop_limit({self.bind(s.pos, '_p')}, {self.max_loops}); break", s.pos)
        self._loop_depth += 1
        self.body(s.body, ind + 1)
        self._loop_depth -= 1

    def foreach(self, s: ast.ForEach, ind: int) -> None:
        n = self.bind(None, "_u")
        it = f"_it{n}"
        iterable = s.iterable
        if iterable.index != "*":
            key = f"({iterable.key})" if iterable.key is not None else ""
            self.error(iterable.pos, f"for (... in {iterable.text}): iterate over all values, "
                                     f"e.g. $({iterable.name}{key}[*])")
        spec = self.resolve(iterable)
        if spec is not None and not iterable.transforms:
            # value by value, index 0, 1, ... until NULL (as OpenSIPS walks an AVP or a header list):
            # a getter joins the values of [*] into one string, which cannot be split back reliably
            g = self.bind(spec.getter, "_g")
            src = f"_rt.pv_values({g}, ctx, {iterable.key!r}, {self.max_loops})"
        else:
            src = f"_rt.as_list({self.pvar_get(iterable)})[:{self.max_loops}]"
        setter = self.pvar_set(s.var)
        self.emit(ind, f"for {it} in {src}:", s.pos)
        self.emit(ind + 1, setter.format(value=it), s.pos)
        self._loop_depth += 1
        self.body(s.body, ind + 1)
        self._loop_depth -= 1

    def async_(self, s: ast.Async, ind: int) -> None:
        call = self.call(s.call)
        key = (REQUEST_ROUTE, s.resume_route)
        if key not in self.defs:
            self.error(s.pos, f"async(): resume route '{s.resume_route}' is not defined "
                              f"(route[{s.resume_route}])")
            return
        # Everything is asyncio here: the function is awaited, then the resume route runs, then the
        # script ends (OpenSIPS does not come back to the statement after async()).
        self.emit(ind, call, s.pos)
        self.emit(ind, f"await _rt.call_route(ctx, {self.fn_names[key]}, None)", s.pos)
        self.emit(ind, "raise _Exit", s.pos)

    def assign(self, s: ast.Assign, ind: int) -> None:
        target = s.target
        if target.transforms:
            self.error(target.pos, f"cannot assign to {target.text}: it has a transformation")
            raise _Failed
        value = "None" if isinstance(s.value, ast.NullLit) else self.value(s.value)
        setter = self.pvar_set(target)
        if s.op == "=":
            self.emit(ind, setter.format(value=value), s.pos)
        elif s.op == ":=":
            # := replaces every value (OpenSIPS: `$avp(x) := v` deletes the old ones first): the setter
            # gets index "*" with None, then the value.
            self.emit(ind, self.pvar_set(target, "'*'").format(value="None"), s.pos)
            self.emit(ind, setter.format(value=value), s.pos)
        else:
            op = s.op[:-1]
            self.emit(ind, setter.format(value=f"_rt.arith({op!r}, {self.pvar_get(target)}, {value})"), s.pos)

    # -- expressions -----------------------------------------------------------------------------------
    def cond(self, e: Any) -> str:
        """Python expression giving a bool."""
        if isinstance(e, ast.BinOp):
            if e.op == "&&":
                return f"({self.cond(e.left)} and {self.cond(e.right)})"
            if e.op == "||":
                return f"({self.cond(e.left)} or {self.cond(e.right)})"
            if e.op in _CMP or e.op in ("=~", "!~"):
                return self.value(e)
        if isinstance(e, ast.UnaryOp) and e.op == "!":
            return f"(not {self.cond(e.operand)})"
        if isinstance(e, (ast.Call, ast.RouteCall)):
            return f"({self.value(e)} > 0)"
        return f"_rt.truth({self.value(e)})"

    def value(self, e: Any) -> str:
        """Python expression giving the value (str, int or None)."""
        if isinstance(e, ast.IntLit):
            return repr(e.value)
        if isinstance(e, ast.NullLit):
            return "None"
        if isinstance(e, ast.StrLit):
            return self.string(e)
        if isinstance(e, ast.Ident):
            return repr(e.name)
        if isinstance(e, ast.PVar):
            return self.pvar_get(e)
        if isinstance(e, ast.Call):
            return self.call(e)
        if isinstance(e, ast.RouteCall):
            return self.route_call(e)
        if isinstance(e, ast.UnaryOp):
            if e.op == "!":
                return f"(0 if {self.cond(e.operand)} else 1)"
            return f"_rt.{'neg' if e.op == '-' else 'bit_not'}({self.value(e.operand)})"
        if isinstance(e, ast.BinOp):
            if e.op in ("&&", "||"):
                return f"(1 if {self.cond(e)} else 0)"
            if e.op in _CMP:
                return f"{_CMP[e.op]}({self.value(e.left)}, {self.value(e.right)})"
            if e.op in ("=~", "!~"):
                rx = self.regex(e.right)
                m = f"_rt.match({self.value(e.left)}, {rx})"
                return m if e.op == "=~" else f"(not {m})"
            if e.op == "+":
                return f"_rt.add({self.value(e.left)}, {self.value(e.right)})"
            return f"_rt.arith({e.op!r}, {self.value(e.left)}, {self.value(e.right)})"
        self.error(getattr(e, "pos", Pos("?", 1, 1)), f"unsupported expression {type(e).__name__}")
        raise _Failed

    def regex(self, e: Any) -> str:
        if isinstance(e, ast.StrLit):  # a literal: compiled once, here
            try:
                return self.bind(rt.compile_script_regex(e.value), "_x")
            except ValueError as exc:
                self.error(e.pos, str(exc))
                raise _Failed from None
        return f"_rt.dyn_regex({self.value(e)})"

    def string(self, s: ast.StrLit) -> str:
        if s.is_constant:
            return repr(s.value)
        pieces: list[str] = []
        for p in s.parts:
            if isinstance(p, str):
                pieces.append(repr(p))
            else:
                pieces.extend(self._embedded(p))
        return "''.join((" + ", ".join(pieces) + ",))"

    def _embedded(self, pv: ast.PVar) -> list[str]:
        """A pseudo-variable inside a string; "$rU.example" with no $rU.example class reads
        $rU + ".example"."""
        if self.registry is not None and pv.name not in self.registry.pvars and "." in pv.name \
                and pv.key is None and pv.index is None and not pv.transforms:
            head, _, tail = pv.name.partition(".")
            if head in self.registry.pvars:
                short = ast.PVar(head, None, None, (), "$" + head, pv.pos, pv.context)
                return [f"_rt.to_text({self.pvar_get(short)})", repr("." + tail)]
        return [f"_rt.to_text({self.pvar_get(pv)})"]

    # -- pseudo-variables ----------------------------------------------------------------------------
    def resolve(self, pv: ast.PVar) -> PVarSpec | None:
        if not pv.name:
            raise _Failed  # a syntax error already reported
        if pv.context is not None:
            self.error(pv.pos, f"{pv.text}: the <{pv.context}> context is not supported")
            raise _Failed
        if self.registry is None:
            return None
        spec = self.registry.pvars.get(pv.name)
        if spec is None:
            self.error(pv.pos, f"unknown pseudo-variable ${pv.name}")
            raise _Failed
        if spec.key == "required" and pv.key is None:
            self.error(pv.pos, f"${pv.name} needs a name in parentheses: ${pv.name}(...)")
            raise _Failed
        if spec.key == "none" and pv.key is not None:
            self.error(pv.pos, f"${pv.name} takes no name in parentheses (got {pv.text})")
            raise _Failed
        if pv.key is not None and spec.check_key is not None:
            try:
                spec.check_key(pv.key)
            except ValueError as exc:
                self.error(pv.pos, f"{pv.text}: {exc}")
                raise _Failed from None
        return spec

    def _index(self, pv: ast.PVar) -> str:
        if isinstance(pv.index, ast.PVar):
            return f"_rt.to_int({self.pvar_get(pv.index)})"
        return repr(pv.index)

    def pvar_get(self, pv: ast.PVar) -> str:
        spec = self.resolve(pv)
        index = self._index(pv)
        if spec is None:
            code = "None"
        else:
            g = self.bind(spec.getter, "_g")
            code = f"{g}(ctx, {pv.key!r}, {index})"
        for tr in pv.transforms:
            site = self.transform(tr)
            code = f"{site}(ctx, {code})" if site else code
        return code

    def pvar_set(self, pv: ast.PVar, index: str | None = None) -> str:
        """A statement template with {value}."""
        spec = self.resolve(pv)
        if spec is None:
            return "pass  # {value}"
        if spec.setter is None:
            self.error(pv.pos, f"${pv.name} is read-only: it cannot be assigned")
            raise _Failed
        s = self.bind(spec.setter, "_s")
        idx = index if index is not None else self._index(pv)
        return f"{s}(ctx, {pv.key!r}, {idx}, {{value}})"

    def transform(self, tr: ast.Transform) -> str | None:
        for p in tr.params:
            if isinstance(p, ast.PVar):
                self.pvar_get(p)  # checked even without a registry
        if self.registry is None:
            return None
        spec = self.registry.transforms.get(tr.name)
        if spec is None:
            self.error(tr.pos, f"unknown transformation {{{tr.name}}}")
            raise _Failed
        params = list(tr.params)
        if len(params) > spec.max_params and spec.max_params > 0 and \
                all(not isinstance(p, ast.PVar) for p in params[spec.max_params - 1:]):
            # the last parameter may itself hold commas ({s.select,1,,} / a regex): join the rest back
            tail = ",".join(str(p) for p in params[spec.max_params - 1:])
            params = params[:spec.max_params - 1] + [tail]
        if not spec.min_params <= len(params) <= spec.max_params:
            want = (f"{spec.min_params}" if spec.min_params == spec.max_params
                    else f"{spec.min_params} to {spec.max_params}")
            self.error(tr.pos, f"{{{tr.name}}} takes {want} parameter{'s' if spec.max_params != 1 else ''}, "
                               f"got {len(params)}")
            raise _Failed
        dynamic = any(isinstance(p, ast.PVar) for p in params)
        values: list[Any] = []
        if dynamic:
            for p in params:
                if isinstance(p, ast.PVar):
                    code = self.pvar_get(p)
                    values.append(eval(f"lambda ctx: {code}", self.ns))  # noqa: S307 - our generated code
                else:
                    values.append(p)
        else:
            values = params
            if spec.fixup is not None:
                try:
                    values = list(spec.fixup(tuple(values)))
                except ValueError as exc:
                    self.error(tr.pos, f"{{{tr.name}}}: {exc}")
                    raise _Failed from None
        site = rt.TransformSite(tr.name, spec.fn, tuple(values), dynamic, spec.fixup, tr.pos)
        return self.bind(site, "_t")

    # -- calls -----------------------------------------------------------------------------------------
    def route_call(self, c: ast.RouteCall) -> str:
        key = (REQUEST_ROUTE, c.name)
        args = [self.value(a) if a is not None else "None" for a in c.args]
        if key not in self.defs:
            self.error(c.pos, f"route({c.name}): there is no route[{c.name}]")
            raise _Failed
        arg_code = f"({', '.join(args)},)" if args else "None"
        return f"(await _rt.call_route(ctx, {self.fn_names[key]}, {arg_code}))"

    def call(self, c: ast.Call) -> str:
        # Arguments are checked even when the function is unknown, to report everything at once.
        if self.registry is None:
            for a in c.args:
                if a is not None and not isinstance(a, ast.Ident):
                    try:
                        self.value(a)
                    except _Failed:
                        pass
            return "None"
        spec = self.registry.functions.get(c.name)
        if spec is None:
            self.error(c.pos, f"unknown function {c.name}()" + self._hint(c.name))
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
        site = rt.CallSite(c.name, spec.impl, c.pos, tuple(converters))
        name = self.bind(site, "_c")
        args = "".join(", " + a for a in codes)
        code = f"(await {name}.acall(ctx{args}))" if spec.is_async else f"{name}(ctx{args})"
        if spec.guard is not None:
            predicate = spec.guard(tuple(_literal(a) for a in c.args))
            if predicate is not None:
                return f"({code} if {self.bind(predicate, '_g')}() else _rt.skipped_call(ctx))"
        return code

    def _hint(self, name: str) -> str:
        import difflib
        assert self.registry is not None
        close = difflib.get_close_matches(name, list(self.registry.functions), n=1)
        return f" (did you mean {close[0]}()?)" if close else " (is its module loaded?)"

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


def _route_calls(node: Any, depth: int = 0) -> list[str]:
    """Names of route[x] that a route body calls (route(x), async resume routes)."""
    out: list[str] = []
    if depth > 500:
        return out
    if isinstance(node, ast.RouteCall):
        out.append(node.name)
    elif isinstance(node, ast.Async):
        out.append(node.resume_route)
    if isinstance(node, (list, tuple)):
        for item in node:
            out.extend(_route_calls(item, depth + 1))
    elif hasattr(node, "__dataclass_fields__") and not isinstance(node, ast.Pos):
        for f in node.__dataclass_fields__:
            out.extend(_route_calls(getattr(node, f), depth + 1))
    return out


def _entry(inner: Callable[[MsgContext], Awaitable[int]], label: str, filename: str,
           line_pos: list[Pos | None]) -> RouteFn:
    """The callable stored in CompiledScript.routes: turns exit/drop into return codes and logs bugs."""

    async def entry(ctx: MsgContext) -> int:
        try:
            return await inner(ctx)
        except rt.ExitScript:
            return 0
        except rt.DropScript:
            ctx.extra[rt.DROP_KEY] = True
            return 0
        except Exception as exc:
            pos = _script_pos(exc, filename, line_pos)
            rt.note_failure(ctx, exc, pos)
            if isinstance(exc, SIPError):  # the peer's bad header, met by a pseudo-variable
                log.warning("%s: %s stopped: bad message: %s", pos or label, label, exc)
            else:
                log.error("%s: error while running %s: %s: %s", pos or label, label, type(exc).__name__,
                          exc, exc_info=exc)
            return -1

    entry.__name__ = f"route {label}"
    entry.__qualname__ = entry.__name__
    return entry


def _script_pos(exc: BaseException, filename: str, line_pos: list[Pos | None]) -> Pos | None:
    tb = exc.__traceback__
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            found = tb.tb_lineno
        tb = tb.tb_next
    if found is None:
        return None
    i = found - 1
    while 0 <= i < len(line_pos):
        if line_pos[i] is not None:
            return line_pos[i]
        i -= 1
    return None


def _literal(arg: Any) -> Any:
    """The value of a plain literal argument (a number, a string without pseudo-variables), else None."""
    if isinstance(arg, ast.IntLit):
        return arg.value
    if isinstance(arg, ast.StrLit) and all(isinstance(p, str) for p in arg.parts):
        return arg.value
    return None
