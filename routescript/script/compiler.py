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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from routescript.sip.errors import SIPError

from . import ast
from . import runtime as rt
from .pos import Pos
from .compile_stmt import _StmtGen
from .context import ERROR_ROUTE, EVENT_ROUTE, REQUEST_ROUTE, STARTUP_ROUTE, TIMER_ROUTE, MsgContext
from .diagnostics import Diagnostic, ScriptError
from .grammar import route_label
from .registry import Registry

__all__ = ["DEFAULT_MAX_WHILE_LOOPS", "CompiledScript", "RouteFn", "check_script", "compile_script",
           "route_label"]

log = logging.getLogger("routescript.script")

RouteFn = Callable[[MsgContext], Awaitable[int]]
InstantRouteFn = Callable[[MsgContext], Coroutine[Any, Any, int]]   # a route that never suspends
DEFAULT_MAX_WHILE_LOOPS = 10000  # OpenSIPS's max_while_loops default


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
    code_filename, line_pos: the name the generated code was compiled under and, per generated line
                  (line n at index n-1), the script position it came from (None for glue lines):
                  what a tracer needs to name the script lines that ran (routescript.testing's
                  `routescript test`), read only by such tools - the routes never look at them.
    """

    def __init__(self, routes: dict[tuple[str, str | None], RouteFn],
                 defs: dict[tuple[str, str | None], ast.RouteDef], source: str,
                 never_wait: frozenset[tuple[str, str | None]] = frozenset()) -> None:
        self.routes = routes
        self.defs = defs
        self.source = source
        self.never_wait = never_wait   # the routes whose coroutine ends on its first step (may_wait)
        self.timer_routes: list[tuple[str, int, RouteFn]] = [
            (str(d.name), int(d.interval or 0), routes[k]) for k, d in defs.items() if d.kind == TIMER_ROUTE]
        self.event_routes: dict[str, RouteFn] = {
            str(d.name): routes[k] for k, d in defs.items() if d.kind == EVENT_ROUTE}
        self.event_async: dict[str, bool] = {
            str(d.name): "async" in d.params for d in defs.values() if d.kind == EVENT_ROUTE}
        # event_route[E] blocks that never suspend (compiler: no async function in them or the routes
        # they call) and are not declared `async`: run in place when raised (Routes.run_event_now)
        self.instant_events: dict[str, InstantRouteFn] = {
            str(d.name): cast(InstantRouteFn, routes[k]) for k, d in defs.items()   # async defs: coroutines
            if d.kind == EVENT_ROUTE and k in never_wait and "async" not in d.params}
        self.startup_route = routes.get((STARTUP_ROUTE, None))
        self.error_route = routes.get((ERROR_ROUTE, None))
        # The main request route, resolved once per load: the dispatcher awaits it for every request
        # (a context made with route_type request) without asking get(); a script without one answers
        # as run() does for a missing route: 1.
        self.request_route: RouteFn = routes.get((REQUEST_ROUTE, None)) or _no_route
        self.code_filename = ""
        self.line_pos: list[Pos | None] = []

    def get(self, kind: str, name: str | None = None) -> RouteFn | None:
        if kind == REQUEST_ROUTE and name in ("0", "main"):
            name = None
        return self.routes.get((kind, name))

    def has(self, kind: str, name: str | None = None) -> bool:
        return self.get(kind, name) is not None

    def may_wait(self, kind: str, name: str | None = None) -> bool:
        """Whether running the route may suspend (an async function in it or in a route it calls):
        False when its coroutine always ends on its first step, so a caller may run it in place
        (tm's reply handling) instead of in a task. A route the script does not define never waits."""
        if kind == REQUEST_ROUTE and name in ("0", "main"):
            name = None
        return (kind, name) in self.routes and (kind, name) not in self.never_wait

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


async def _no_route(ctx: MsgContext) -> int:
    return 1


# ---------------------------------------------------------------------------------------------------

def compile_script(script: ast.Script, registry: Registry, *, max_while_loops: int = DEFAULT_MAX_WHILE_LOOPS,
                   enable_asserts: bool = False, abort_on_assert: bool = False) -> CompiledScript:
    """Check and compile every route of `script` against `registry`. Raises ScriptError with every problem.
    The options are the core parameters of the same names (CoreConfig.compile_options())."""
    gen = _Gen(script, registry, max_while_loops, enable_asserts, abort_on_assert)
    gen.generate()
    if gen.errors:
        raise ScriptError(sorted(gen.errors, key=lambda d: (d.pos.file, d.pos.line, d.pos.col)))
    return gen.build()


def check_script(script: ast.Script) -> list[Diagnostic]:
    """The checks that need no module: routes, regexes, break placement, duplicate routes."""
    gen = _Gen(script, None, DEFAULT_MAX_WHILE_LOOPS, False)
    gen.generate()
    return sorted(gen.errors, key=lambda d: (d.pos.file, d.pos.line, d.pos.col))



class _Gen(_StmtGen):
    """The whole generator: expressions (compile_expr), calls (compile_call), statements and routes
    (compile_stmt); build() turns the generated source into CompiledScript."""

    def build(self) -> CompiledScript:
        source = "\n".join(self.lines) + "\n"
        filename = f"<routescript {self.script.files[0] if self.script.files else 'script'}>"
        code = compile(source, filename, "exec")
        module = types.ModuleType("routescript_compiled")
        module.__dict__.update(self.ns)
        for key, fname in self.fn_names.items():
            if self.own_entry(key):
                module.__dict__[f"_failed{fname}"] = _failure(route_label(*key), filename, self.line_pos)
        exec(code, module.__dict__)  # noqa: S102 - the route script compiled by this class, checked at load
        routes: dict[tuple[str, str | None], RouteFn] = {}
        for key, fname in self.fn_names.items():
            fn = module.__dict__[fname]
            if self.own_entry(key):
                fn.__name__ = fn.__qualname__ = f"route {route_label(*key)}"
                routes[key] = fn
            else:
                routes[key] = _entry(fn, route_label(*key), filename, self.line_pos)
        compiled = CompiledScript(routes, dict(self.defs), source, self.never_waiting())
        compiled.code_filename, compiled.line_pos = filename, self.line_pos
        return compiled


def _entry(inner: Callable[[MsgContext], Awaitable[int]], label: str, filename: str,
           line_pos: list[Pos | None]) -> RouteFn:
    """The callable stored in CompiledScript.routes for a route[x] (route(x) calls its inner function,
    through which exit and drop must pass): turns exit/drop into return codes and logs bugs. Every
    other route has the same handling compiled into its body (_StmtGen.own_entry)."""
    failed = _failure(label, filename, line_pos)

    async def entry(ctx: MsgContext) -> int:
        try:
            return await inner(ctx)
        except rt.ExitScript:
            return 0
        except rt.DropScript:
            return rt.dropped(ctx)
        except Exception as exc:  # noqa: BLE001 - logged with its script position by failed()
            return failed(ctx, exc)

    entry.__name__ = f"route {label}"
    entry.__qualname__ = entry.__name__
    return entry


def _failure(label: str, filename: str, line_pos: list[Pos | None]) -> Callable[[MsgContext, Exception], int]:
    """What an unexpected exception in a route becomes: logged with its file:line:col, recorded on the
    context (runtime.note_failure), return code -1."""

    def failed(ctx: MsgContext, exc: Exception) -> int:
        pos = _script_pos(exc, filename, line_pos)
        rt.note_failure(ctx, exc, pos)
        if isinstance(exc, SIPError):  # the peer's bad header, met by a pseudo-variable
            log.warning("%s: %s stopped: bad message: %s", pos or label, label, exc)
        else:
            log.error("%s: error while running %s: %s: %s", pos or label, label, type(exc).__name__,
                      exc, exc_info=exc)
        return -1

    return failed


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
