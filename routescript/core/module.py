"""How a module declares what it exports - the Python side of OpenSIPS's `module_exports`.

A module is a package under `modules/` (importable as `routescript.modules.<name>`, or from another
distribution through the `routescript.modules` entry-point group) whose `MODULE` attribute is a subclass
of `Module`. Everything it exports is declared on that class, in one place:

    class SlModule(Module):
        name = "sl"
        params = (Param("enable_stats", int, 1),)

        @script_function("sl_send_reply", Arg("int"), Arg("str"), routes=(REQUEST_ROUTE, ERROR_ROUTE))
        def sl_send_reply(self, ctx, code, reason): ...

        @mi_command("sl_stats")
        async def mi_stats(self): ...

The core makes one instance per loaded configuration: `Module(server, params)` after every modparam is
applied and typed, then `check()` (load-time validation; raise ConfigError), compiles the script with the
instance's functions, then awaits `start()` before the first message and `stop()` at shutdown.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from routescript.script.registry import ArgSpec, FunctionSpec, PVarSpec, TransformSpec, function

if TYPE_CHECKING:
    from routescript.sip import SocketInfo

    from .host import ModuleHost


class ConfigError(Exception):
    """A configuration problem found at load time. `pos` is (file, line, col) when known."""

    def __init__(self, message: str, pos: tuple[str, int, int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos

    def __str__(self) -> str:
        if self.pos:
            return f"{self.pos[0]}:{self.pos[1]}:{self.pos[2]}: {self.message}"
        return self.message


# Script values and modparam values below stay `Any`: an int, a str, a list of them (multi) or None,
# as the Param or ArgSpec declares - the script decides, not the type checker.

# A decorated method keeps its own type: the decorators only tag it.
_Method = TypeVar("_Method", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Param:
    """A module parameter (modparam). `type` is int or str (OpenSIPS INT_PARAM / STR_PARAM).

    multi: the parameter may be given several times (values collected in a list, e.g. OpenSIPS's
    USE_FUNC_PARAM ones). check: extra validation of a value, raising ValueError("why").
    later: the feature behind it is not built yet - the default is accepted, any other value is refused
    at load time with this text (never silently ignored).
    """

    name: str
    type: type
    default: Any = None
    doc: str = ""
    multi: bool = False
    check: Callable[[Any], None] | None = None
    later: str | None = None

    def convert(self, value: Any) -> Any:
        """Type a modparam value as OpenSIPS does: ints for INT params (a numeric string is accepted)."""
        if self.type is int:
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, str):
                try:
                    value = int(value.strip(), 0)
                except ValueError:
                    raise ValueError(f"parameter '{self.name}' expects an integer, got \"{value}\"") from None
            if not isinstance(value, int):
                raise ValueError(f"parameter '{self.name}' expects an integer")
        elif self.type is str:
            if isinstance(value, int):
                value = str(value)
            if not isinstance(value, str):
                raise ValueError(f"parameter '{self.name}' expects a string")
        if self.check is not None:
            self.check(value)
        if self.later is not None and value != self.default:
            raise ValueError(f"parameter '{self.name}' = {value!r} is not supported yet: {self.later}")
        return value


def Arg(kind: str = "str", name: str = "", *, optional: bool = False,  # noqa: N802 - reads like the ArgSpec it makes
        fixup: Callable[[Any], Any] | None = None, static: bool = False) -> ArgSpec:
    """Shorthand for an argument of a script function."""
    return ArgSpec(kind=kind, optional=optional, name=name, fixup=fixup,  # type: ignore[arg-type]
                   static=static)


# Where an MI command runs with worker processes (MICommand.workers).
MIPlacement = Literal["supervisor", "one", "each", "concat"]
MI_PLACEMENTS: frozenset[str] = frozenset({"supervisor", "one", "each", "concat"})


@dataclass(frozen=True, slots=True)
class MICommand:
    """An MI command. `impl(**params)` returns a JSON-able result or raises MIError.

    params: the parameter names in positional order; optional ones are listed in `optional`.
    walks_rows: the command walks a whole table (every subscription, every publication): the registry
    runs at most the core parameter `mi_max_walks` of those at once (routescript.mi.registry), and the
    command hands the loop back every few rows (routescript.mi.walk).
    recipes: the exact parameter sets the command accepts (OpenSIPS mi recipes), when not every prefix of
    the optional parameters is one.
    workers: where it runs when the server has worker processes (docs/workers.md, section 5): "supervisor",
    "one" (worker 0), "each" (every worker; errors collected) or "concat" (every worker; lists joined,
    items with the same `key` fields once). None: undeclared, which tests/mi/test_placement.py refuses.
    """

    name: str
    impl: Callable[..., Any]
    params: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    doc: str = ""
    module: str = "core"
    walks_rows: bool = False
    recipes: tuple[tuple[str, ...], ...] | None = None
    workers: MIPlacement | None = None
    key: tuple[str, ...] = ()


class MIError(Exception):
    """A command-level MI failure (JSON-RPC error -32000 unless `code` says otherwise)."""

    def __init__(self, message: str, code: int = -32000) -> None:
        super().__init__(message)
        self.code = code


# --- decorators: they only tag methods; Module collects the tags per instance --------------------------

def script_function(name: str, *args: ArgSpec,
                    routes: Iterable[str] | None = None) -> Callable[[_Method], _Method]:
    def tag(method: _Method) -> _Method:
        method.__dict__.setdefault("_rs_functions", []).append((name, args, routes))
        return method
    return tag


def mi_command(name: str, *, aliases: Iterable[str] = (), optional: Iterable[str] = (),
               doc: str = "", walks_rows: bool = False,
               recipes: Iterable[tuple[str, ...]] | None = None,
               workers: MIPlacement | None = None, key: Iterable[str] = ()) -> Callable[[_Method], _Method]:
    fixed = tuple(tuple(r) for r in recipes) if recipes is not None else None
    if workers is not None and workers not in MI_PLACEMENTS:
        raise ValueError(f"MI command {name}: workers={workers!r}, expected one of {sorted(MI_PLACEMENTS)}")
    if key and workers != "concat":
        raise ValueError(f"MI command {name}: key= de-duplicates joined lists: only with workers=\"concat\"")

    def tag(method: _Method) -> _Method:
        method.__dict__.setdefault("_rs_mi", []).append((name, tuple(aliases), tuple(optional), doc,
                                                         walks_rows, fixed, workers, tuple(key)))
        return method
    return tag


def pseudo_variable(name: str, *, key: str = "none",
                    setter: str | None = None) -> Callable[[_Method], _Method]:
    """Tag a getter method (self, ctx, key, index); `setter` names the setter method, if writable."""
    def tag(method: _Method) -> _Method:
        method.__dict__.setdefault("_rs_pvars", []).append((name, key, setter))
        return method
    return tag


RunsIn = Literal["workers", "supervisor", "both"]


class Module:
    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    events: ClassVar[tuple[str, ...]] = ()      # event names it raises (E_...)
    depends: ClassVar[tuple[str, ...]] = ()     # modules that must be loaded too
    # Modules it calls when they are loaded (OpenSIPS's DEP_SILENT), as pua delivers to an in-process
    # presence: like `depends` they start before it and stop after it (ModuleSet.start_order), but
    # their absence is no error.
    uses: ClassVar[tuple[str, ...]] = ()
    aliases: ClassVar[tuple[str, ...]] = ()     # other loadmodule names served by this class
    # The parameter that takes the core db_default_url when the script sets none, as OpenSIPS's
    # init_db_url() gives it to the module's db_url (None: the module does not take it).
    db_url_from_default: ClassVar[str | None] = None
    # Which processes start it when the server runs worker processes (docs/workers.md, section 1):
    # "workers" (SIP work, the default), "supervisor" (MI and HTTP listeners: one per server) or "both".
    # One process (no workers) starts every module.
    runs_in: ClassVar[RunsIn] = "workers"
    # Script functions declared so scripts load, whose feature is not built yet: name -> why. The core
    # warns at load time at every place the script calls one (file:line:col); the impl must still log
    # an error and return -1 when called - never succeed silently.
    unbuilt: ClassVar[dict[str, str]] = {}
    # Script functions this instance cannot serve as it is configured: name -> why (e.g. presence
    # without db_url runs as a library). Unlike `unbuilt`, each call in the script is a load-time
    # error at its file:line:col (also on reload_routes: the old script is kept). Set it in __init__
    # or check(), before the script is compiled.
    refused: dict[str, str]
    # The classes of the parts a module is composed of whose tagged methods (script functions, MI
    # commands, pseudo-variables) it exports as its own: the module makes one instance of each and
    # returns them from export_parts(). Listed on the class so the names are known without an instance.
    part_types: ClassVar[tuple[type, ...]] = ()

    def __init__(self, server: ModuleHost, params: dict[str, Any]) -> None:
        self.server = server
        self.modparams = params
        self.refused = {}

    # typed access to a parameter's value (default when not set in the script)
    def param(self, name: str) -> Any:
        return self.modparams[name]

    def check(self) -> None:
        """Load-time validation after modparams, before the script is compiled. Raise ConfigError."""

    async def start(self) -> None:
        """mod_init: open databases, load state, start timers. Called before the first message."""

    async def stop(self) -> None:
        """Flush and close. Called once at clean shutdown."""

    def before_chroot(self, sockets: Sequence[SocketInfo]) -> None:
        """Read now what this module would otherwise read from disk later, in a worker process: a
        `chroot` comes next (routescript/core/chroot.py), after which the files are out of reach.
        `sockets`: every SIP socket bound, named as the workers adopt them. Most modules read nothing
        outside their start() (which runs after the chroot, inside it) and keep this no-op."""

    # --- exports, collected from the tagged methods -------------------------------------------------
    @classmethod
    def function_names(cls) -> set[str]:
        """The script functions the class exports, known without an instance (one that failed to load)."""
        return cls._tag_names("_rs_functions")

    @classmethod
    def mi_command_names(cls) -> set[str]:
        """The MI commands the class declares (aliases aside), whether or not an instance serves them."""
        return cls._tag_names("_rs_mi")

    @classmethod
    def pvar_names(cls) -> set[str]:
        """The pseudo-variables the class declares, by name without the `$`."""
        return cls._tag_names("_rs_pvars")

    @classmethod
    def _tag_names(cls, attr: str) -> set[str]:
        classes = [*cls.__mro__, *(klass for part in cls.part_types for klass in part.__mro__)]
        return {tag[0] for klass in classes for value in vars(klass).values() if callable(value)
                for tag in getattr(value, "__dict__", {}).get(attr, ())}

    def export_parts(self) -> Sequence[object]:
        """The instances of `part_types` whose tagged methods are exported with the module's own."""
        return ()

    def functions(self) -> list[FunctionSpec]:
        out = []
        for method, tags, _owner in self._tagged("_rs_functions"):
            for name, args, routes in tags:
                out.append(function(name, method, *args, routes=routes, module=self.name))
        return out

    def mi_commands(self) -> list[MICommand]:
        out = []
        for method, tags, _owner in self._tagged("_rs_mi"):
            for name, aliases, optional, doc, walks_rows, recipes, workers, key in tags:
                sig = inspect.signature(method)
                names = tuple(p for p in sig.parameters)
                out.append(MICommand(name, method, names, optional, aliases, doc or (method.__doc__ or ""),
                                     self.name, walks_rows, recipes, workers, key))
        return out

    def pvars(self) -> list[PVarSpec]:
        out = []
        for method, tags, owner in self._tagged("_rs_pvars"):
            for name, key, setter in tags:
                # the setter is named by the decorator: a method of the getter's class, looked up by name
                out.append(PVarSpec(name, method, getattr(owner, setter) if setter else None, key,
                                    module=self.name))
        return out

    def transforms(self) -> list[TransformSpec]:
        return []

    def _tagged(self, attr: str) -> list[tuple[Callable[..., Any], list[tuple[Any, ...]], object]]:
        """(bound method, its tags, the object it is bound to) for every method the decorators above
        tagged with `attr`, on the module and on its export_parts()."""
        found = []
        for owner in (self, *self.export_parts()):
            for cls in type(owner).__mro__:
                for value in vars(cls).values():
                    # the tags live in the function's __dict__ (script_function & co. put them there)
                    tags = getattr(value, "__dict__", {}).get(attr) if callable(value) else None
                    if tags is not None:
                        found.append((getattr(owner, value.__name__), tags, owner))
        return found


@dataclass(slots=True)
class ModuleSet:
    """The modules a configuration loaded, by name, in load order."""

    instances: dict[str, Module] = field(default_factory=dict)

    def get(self, name: str) -> Module | None:
        return self.instances.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.instances

    def start_order(self) -> list[str]:
        """The loaded modules in the order they start: each after the loaded modules it `depends` on or
        `uses`, otherwise in load order (OpenSIPS's init_modules reorders by its module dependencies the
        same way). The stop runs it backwards, so a module still has what it calls while it stops: pua
        drains its PUBLISHes into presence before presence closes its database, whatever the order of
        the loadmodule lines. A cycle (none among our modules: tests/core checks it) falls back to load
        order: the first module still waiting goes next."""
        needs = {name: [dep for dep in (*type(mod).depends, *type(mod).uses) if dep in self.instances
                        and dep != name]
                 for name, mod in self.instances.items()}
        order: list[str] = []
        placed: set[str] = set()
        waiting = list(self.instances)
        while waiting:
            ready = next((n for n in waiting if all(dep in placed for dep in needs[n])), waiting[0])
            waiting.remove(ready)
            order.append(ready)
            placed.add(ready)
        return order
