"""The MI command registry and dispatcher, with OpenSIPS 3.x's parameter semantics.

OpenSIPS gives every MI command a list of "recipes", each an exact set of parameter names
(mi/mi.c get_cmd_recipe):
  - no params: the recipe without parameters, else -32602 "Too few or too many parameters";
  - positional params (a JSON array): the recipe with as many parameters (two such recipes:
    "Ambiguous call, use named parameters instead"), else "Too few or too many parameters";
  - named params (a JSON object): the recipe with the same count and the same names; same count
    but other names: "Named parameters do not match", else "Too few or too many parameters".

Our MICommand lists `params` (positional order) and the `optional` ones. Its recipes are the
required params followed by any prefix of the optional ones (log_level: {}, {level}, {level, pid}),
for positional and named calls alike, so `{"pid": 1}` alone is refused as OpenSIPS refuses it.
A command that needs other sets (presence's subs_phtable_list takes no params or both "from" and "to")
tags its method with `_rs_mi_recipes = ((), ("from", "to"))`; the registry honours that tag.

A Python parameter named like a keyword gets a trailing underscore (`from_`); its MI name drops it.
Values are typed from the method's annotations as OpenSIPS's get_mi_*_param do: `int` takes a number
or a numeric string, `str` a string or a number, `list[...]` a non-empty array; anything else is
-32602 "Bad type for parameter '<name>'".

Commands that walk a whole table (MICommand.walks_rows: subs_phtable_list, pres_phtable_list,
pres_expose) run at most `max_walks` at once (core parameter mi_max_walks, 2 by default): each holds
a copy of its rows and spends the loop's time in slices (routescript.mi.walk), so several in parallel
multiply both; one more is answered at once with error 503 "Too many table walks running" and a
log line, and the caller retries (OpenSIPS has no such bound: its MI process runs one command at a
time, which a single event loop cannot afford to imitate).

Command results: any JSON-able value; None is "OK" (OpenSIPS init_mi_result_ok). MIError(message,
code) is the error reply {"code": code, "message": message} (-32000 unless the command says
otherwise, e.g. OpenSIPS's 404 "Statistics Not Found").
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from routescript.core.module import MICommand, MIError

if TYPE_CHECKING:
    from routescript.core.host import ModuleHost

from .jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, SERVER_ERROR, JSONRPCError
from .stats import Statistics, statistics_of

log = logging.getLogger("routescript.mi")

NO_PARAMS = "Too few or too many parameters"
AMBIGUOUS = "Ambiguous call, use named parameters instead"
NAMES_DO_NOT_MATCH = "Named parameters do not match"
MAX_MI_PARAMS = 10  # OpenSIPS MAX_MI_PARAMS
DEFAULT_MAX_WALKS = 2  # the core parameter mi_max_walks (routescript/core/config.py)
BUSY = 503  # MI error code for "too many table walks", OpenSIPS's HTTP-like MI codes (404, 500 ...)

# Set by dispatch() for the command it runs: may this transport's caller stop the server?
_allow_kill: contextvars.ContextVar[bool] = contextvars.ContextVar("rs_mi_allow_kill", default=False)


def _mi_name(py_name: str) -> str:
    """`from_` -> `from` (a Python keyword as an MI parameter name)."""
    return py_name[:-1] if py_name.endswith("_") and len(py_name) > 1 else py_name


def _kind_of(annotation: Any) -> str:
    """'int' | 'str' | 'list' | '' from a parameter annotation (a type or, under
    `from __future__ import annotations`, its text)."""
    if annotation is inspect.Parameter.empty:
        return ""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = text.replace("typing.", "").replace(" ", "")
    for wrap in ("Optional[",):
        if text.startswith(wrap) and text.endswith("]"):
            text = text[len(wrap):-1]
    parts = [p for p in text.split("|") if p not in ("None", "NoneType")]
    if len(parts) != 1:
        return ""
    base = parts[0]
    if base == "int":
        return "int"
    if base == "str":
        return "str"
    if base.startswith(("list", "List")):
        return "list"
    return ""


class BoundCommand:
    """An MICommand with its MI parameter names, recipes and value kinds worked out once."""

    def __init__(self, cmd: MICommand) -> None:
        self.cmd = cmd
        self.py_names = {_mi_name(p): p for p in cmd.params}
        self.names = tuple(_mi_name(p) for p in cmd.params)
        optional = {_mi_name(p) for p in cmd.optional}
        self.required = tuple(n for n in self.names if n not in optional)
        self.optional = tuple(n for n in self.names if n in optional)
        # Declared with mi_command(recipes=...), or (older form) tagged on the function as _rs_mi_recipes.
        explicit = cmd.recipes if cmd.recipes is not None else getattr(cmd.impl, "_rs_mi_recipes", None)
        if explicit is not None:
            self.recipes = tuple(tuple(r) for r in explicit)
        else:
            self.recipes = tuple(self.required + self.optional[:k] for k in range(len(self.optional) + 1))
        for recipe in self.recipes:
            unknown = [n for n in recipe if n not in self.py_names]
            if unknown:
                raise ValueError(f"MI command {cmd.name}: recipe names unknown parameter(s) {unknown}")
        self.kinds: dict[str, str] = {}
        try:
            sig = inspect.signature(cmd.impl)
            for p in sig.parameters.values():
                self.kinds[_mi_name(p.name)] = _kind_of(p.annotation)
        except (TypeError, ValueError):
            pass

    def bind(self, params: dict[str, Any] | list[Any] | None) -> dict[str, Any]:
        """Map the request's params onto the impl's keyword arguments (JSONRPCError -32602)."""
        if params is None or len(params) == 0:
            if () in self.recipes:
                return {}
            raise JSONRPCError(INVALID_PARAMS, data=NO_PARAMS)
        if len(params) > MAX_MI_PARAMS:
            raise JSONRPCError(INVALID_PARAMS, data=NO_PARAMS)
        if isinstance(params, list):
            matches = [r for r in self.recipes if r and len(r) == len(params)]
            if not matches:
                raise JSONRPCError(INVALID_PARAMS, data=NO_PARAMS)
            if len(matches) > 1:
                raise JSONRPCError(INVALID_PARAMS, data=AMBIGUOUS)
            named = dict(zip(matches[0], params, strict=True))  # same length: matched on it
        else:
            named = dict(params)
            if not self._named_ok(named):
                same_count = any(r and len(r) == len(named) for r in self.recipes)
                raise JSONRPCError(INVALID_PARAMS, data=NAMES_DO_NOT_MATCH if same_count else NO_PARAMS)
        return {self.py_names[k]: self._typed(k, v) for k, v in named.items()}

    def _named_ok(self, named: dict[str, Any]) -> bool:
        keys = set(named)
        return any(r and set(r) == keys and len(r) == len(keys) for r in self.recipes)

    def _typed(self, name: str, value: Any) -> Any:
        kind = self.kinds.get(name, "")
        bad = JSONRPCError(INVALID_PARAMS, data=f"Bad type for parameter '{name}'")
        if kind == "int":
            if isinstance(value, bool):
                raise bad
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    raise bad from None
            raise bad
        if kind == "str":
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(int(value)) if float(value).is_integer() else str(value)
            raise bad
        if kind == "list":
            if not isinstance(value, list):
                raise bad
            if not value:
                raise JSONRPCError(INVALID_PARAMS, data=f"Empty array in parameter '{name}'")
            return value
        return value


class MIRegistry:
    """Every MI command of one server: the core's and each loaded module's, by name and alias.

    `await dispatch(name, params)` runs one command; `allow_kill` is the transport's permission to run
    `kill` (see routescript.mi.core_cmds). `clock` is injected for uptime.
    """

    def __init__(self, server: ModuleHost | None = None, *, statistics: Statistics | None = None,
                 clock: Callable[[], float] = time.time, max_walks: int = DEFAULT_MAX_WALKS) -> None:
        self.server = server
        self.max_walks = max_walks
        self.walks = 0  # walks_rows commands running now
        self.clock = clock
        self.started_at = float(clock())
        self.statistics = statistics if statistics is not None else (
            statistics_of(server) if server is not None else Statistics())
        self._commands: dict[str, BoundCommand] = {}
        self._order: list[str] = []
        # Set by a worker supervisor (routescript/workers/supervisor.py): a command whose placement
        # (MICommand.workers) is not "supervisor" runs in the workers through `forward`; `processes`
        # gives the rows of `ps`; `gather_statistics` the workers' merged statistics (get_statistics,
        # list_statistics); `reload_routes` the all-or-none reload of every worker.
        self.forward: Callable[[MICommand, Any], Awaitable[Any]] | None = None
        self.processes: Callable[[], list[dict[str, Any]]] | None = None
        self.gather_statistics: Callable[[], Awaitable[Statistics]] | None = None
        self.reload_routes: Callable[[], Awaitable[list[Any]]] | None = None

    # ------------------------------------------------------------------ registration
    def add(self, cmd: MICommand) -> bool:
        """Register a command under its name and aliases. A name already taken is logged and the
        command skipped, as OpenSIPS's register_mi_cmd does. Returns whether it was added."""
        try:
            bound = BoundCommand(cmd)
        except ValueError as exc:
            log.error("%s", exc)
            return False
        names = (cmd.name, *cmd.aliases)
        taken = [n for n in names if n in self._commands]
        if taken:
            log.error("MI command <%s> of module %s already registered; skipped", taken[0], cmd.module)
            return False
        for n in names:
            self._commands[n] = bound
            self._order.append(n)
        return True

    def add_all(self, cmds: Iterable[MICommand]) -> None:
        for cmd in cmds:
            self.add(cmd)

    def lookup(self, name: str) -> MICommand | None:
        bound = self._commands.get(name)
        return bound.cmd if bound is not None else None

    def recipes(self, name: str) -> tuple[tuple[str, ...], ...] | None:
        bound = self._commands.get(name)
        return bound.recipes if bound is not None else None

    def names(self) -> list[str]:
        """Every command name and alias, in registration order (what `which` lists)."""
        return list(self._order)

    def __contains__(self, name: str) -> bool:
        return name in self._commands

    # ------------------------------------------------------------------ dispatch
    async def dispatch(self, name: str, params: dict[str, Any] | list[Any] | None = None, *,
                       allow_kill: bool = False) -> Any:
        """Run command `name` with `params`; the result, or JSONRPCError (-32601, -32602, a command's
        own code, -32000)."""
        bound = self._commands.get(name)
        if bound is None:
            raise JSONRPCError(METHOD_NOT_FOUND)
        kwargs = bound.bind(params)
        if self.forward is not None and bound.cmd.workers != "supervisor":
            return await self.forward(bound.cmd, params)
        walks = bound.cmd.walks_rows
        if walks:
            if self.walks >= self.max_walks:
                log.warning("MI %s refused: %d table walks already running (mi_max_walks %d)", name,
                            self.walks, self.max_walks)
                raise JSONRPCError(BUSY, "Too many table walks running",
                                   f"{self.walks} MI commands walking every row are running (core parameter "
                                   "mi_max_walks); retry when they are done")
            self.walks += 1
        token = _allow_kill.set(allow_kill)
        try:
            result = bound.cmd.impl(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except MIError as exc:
            raise JSONRPCError(exc.code, str(exc), getattr(exc, "data", None)) from None
        except JSONRPCError:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            log.exception("MI command %s failed", name)
            raise JSONRPCError(SERVER_ERROR, data="Command handler failed (see the server log)") from None
        finally:
            _allow_kill.reset(token)
            if walks:
                self.walks -= 1
        return "OK" if result is None else result

    @property
    def kill_allowed(self) -> bool:
        """Whether the transport running the current command allows `kill`."""
        return _allow_kill.get()


def build_registry(server: ModuleHost, *, clock: Callable[[], float] = time.time) -> MIRegistry:
    """The core commands, then every loaded module's, in load order."""
    from .core_cmds import CoreMI

    max_walks = server.config.get("mi_max_walks")
    reg = MIRegistry(server, clock=clock,
                     max_walks=DEFAULT_MAX_WALKS if max_walks is None else int(max_walks))
    core = CoreMI(server, {}, registry=reg)
    reg.add_all(core.mi_commands())
    for mod in server.modules.instances.values():
        try:
            cmds = mod.mi_commands()
        except Exception:
            log.exception("module %s: cannot list its MI commands", mod.name)
            continue
        reg.add_all(cmds)
    return reg


# One registry per server, shared by its MI transports; kept here rather than as an attribute set on
# the server.
_REGISTRIES: weakref.WeakKeyDictionary[ModuleHost, MIRegistry] = weakref.WeakKeyDictionary()


def existing_registry(server: ModuleHost) -> MIRegistry | None:
    """The server's registry if an MI transport built it already."""
    return _REGISTRIES.get(server)


def mi_registry(server: ModuleHost) -> MIRegistry:
    """The server's registry, built on first use by whichever MI transport starts first."""
    reg = _REGISTRIES.get(server)
    if reg is None:
        reg = _REGISTRIES[server] = build_registry(server)
    return reg
