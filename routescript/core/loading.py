"""Loading a configuration (the ConfigLoader): parse, modules, modparams, compile (load); recompiling the
routes in place (reload_routes); and the diagnostics both report (refused functions, unbuilt functions,
ignored changes)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, cast

from routescript.script import CompiledScript
from routescript.script.ast import Script

from . import _script
from .config import CoreConfig, apply_globals, canonical_name, unknown_globals
from .events import EventBus
from .loader import (
    Classes,
    LoadModule,
    ModParam,
    build_registry,
    make_modules,
    missing_module_message,
    resolve_modules,
    type_modparams,
)
from .module import ConfigError, ModuleSet
from .routes import Routes
from .stats import CoreCounters, Statistics, register_module_statistics
from .timers import Timers

if TYPE_CHECKING:
    from routescript.script.diagnostics import Diagnostic as ScriptDiagnostic
    from routescript.script.registry import Registry

Pos = tuple[str, int, int]

if TYPE_CHECKING:
    from routescript.transaction import TransactionLayer

    from .host import ModuleHost

log = logging.getLogger("routescript.core")


class PlainDiagnostic:
    """A diagnostic without a script position (e.g. the file cannot be read); prints like a Diagnostic."""

    __slots__ = ("message", "severity")
    pos = None

    def __init__(self, message: str, severity: str = "error") -> None:
        self.message = message
        self.severity = severity

    def __str__(self) -> str:
        return ("warning: " if self.severity == "warning" else "") + self.message

    def __repr__(self) -> str:
        return f"PlainDiagnostic({str(self)!r})"


# What loading reports: the script's diagnostics (file:line:col, the line, a caret) or plain ones.
LoadDiagnostic: TypeAlias = "PlainDiagnostic | ScriptDiagnostic"


def Diagnostic(message: str, pos: Pos | None = None,  # noqa: N802 - makes a Diagnostic
               severity: str = "error") -> LoadDiagnostic:
    """routescript.script's Diagnostic (file:line:col, the line, a caret) when the position is known."""
    if pos is None:
        return PlainDiagnostic(message, severity)
    from routescript.script.diagnostics import Diagnostic as ScriptDiagnostic
    from routescript.script.pos import Pos as ScriptPos

    return ScriptDiagnostic(ScriptPos(*pos), message, _source_line(pos) or "", severity)


class LoadError(Exception):
    """The configuration cannot be loaded; `diagnostics` lists every problem found."""

    def __init__(self, diagnostics: list[LoadDiagnostic], omitted: int = 0) -> None:
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = diagnostics
        self.omitted = omitted  # errors past the parser's cap, not listed (ScriptError.omitted)


def _source_line(pos: Pos | None) -> str | None:
    if not pos:
        return None
    try:
        with open(pos[0], encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f, 1):
                if i == pos[1]:
                    return line.rstrip("\n")
    except OSError:
        return None
    return None


def default_db_urls(config: CoreConfig, classes: Classes, mps: Sequence[ModParam]) -> list[ModParam]:
    """db_default_url as the db_url of each loaded module that takes it (Module.db_url_from_default)
    and whose db_url the script does not set - a modparam line at db_default_url's position, so that
    it is checked (and refused) as the module's own would be."""
    url = config.get("db_default_url")
    if not url:
        return []
    given = {(line.module, line.param) for line in mps}
    return [ModParam(name, cls.db_url_from_default, url, config.positions.get("db_default_url"))
            for name, (cls, _pos) in classes.items()
            if cls.db_url_from_default and (name, cls.db_url_from_default) not in given]


def config_diagnostic(exc: ConfigError, severity: str = "error") -> LoadDiagnostic:
    return Diagnostic(exc.message, exc.pos, severity)


class Loaded:
    """Everything one load of a configuration produced (the parts reload keeps or replaces)."""

    def __init__(self, path: str, ast: Script, config: CoreConfig, compiled: CompiledScript,
                 warnings: list[LoadDiagnostic], loadmodules: list[LoadModule], modparams: list[ModParam],
                 globals_: list[tuple[str, _script.GlobalValue, Pos | None]]) -> None:
        self.path = path
        self.ast = ast
        self.config = config
        self.compiled = compiled
        self.warnings = warnings
        self.loadmodules = loadmodules
        self.modparams = modparams
        self.globals = globals_

    def loadmodule_pos(self, name: str) -> Pos | None:
        for lm in self.loadmodules:
            if lm.name == name:
                return lm.pos
        return None

    @property
    def route_count(self) -> int:
        return len(_script.routes_of(self.ast))


class PreparedReload:
    """A script reload compiled aside (ConfigLoader.prepare_reload), not swapped in yet: `errors` (then
    nothing to commit) or the new `loaded`, its `warnings`, and the hash of the files it was read from
    (worker processes check they compiled what the supervisor checked)."""

    __slots__ = ("errors", "warnings", "loaded", "files_sha256")

    def __init__(self, errors: list[LoadDiagnostic], warnings: list[LoadDiagnostic], loaded: Loaded | None,
                 files_sha256: str = "") -> None:
        self.errors = errors
        self.warnings = warnings
        self.loaded = loaded
        self.files_sha256 = files_sha256

    @classmethod
    def failed(cls, errors: list[LoadDiagnostic]) -> PreparedReload:
        return cls(errors, [], None)


def files_sha256(ast: Script) -> str:
    """SHA-256 of every file the script was read from (the main file, then its includes: names and
    texts), hex: equal in two processes exactly when both compiled the same text."""
    digest = hashlib.sha256()
    for name in ast.files:
        for part in (name, ast.texts.get(name, "")):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return digest.hexdigest()


class LoadingServer(Protocol):
    """What loading installs in the Server (the configuration, the module instances) and reads of it;
    the Server itself is what the modules are made with (Module.server)."""

    config: CoreConfig
    modules: ModuleSet

    @property
    def events(self) -> EventBus: ...

    @property
    def statistics(self) -> Statistics: ...

    @property
    def counters(self) -> CoreCounters: ...

    @property
    def transactions(self) -> TransactionLayer | None: ...


# socket= protocols that need a transport module loaded (OpenSIPS: "no protocol module for tls")
class ConfigLoader:
    """Server.load and Server.reload_routes: the configuration's file, what loading it produced
    (`loaded`, the function `registry`), and the compiled script it gives the routes."""

    def __init__(self, server: LoadingServer, routes: Routes, timers: Timers) -> None:
        self._server = server
        self._routes = routes
        self._timers = timers
        self.path = ""
        self.loaded: Loaded | None = None
        self.registry: Registry | None = None
        self._reload_lock = asyncio.Lock()

    # ------------------------------------------------------------------ load
    def load(self, path: str, overrides: Sequence[ModParam] = (),
             core_values: Mapping[str, object] | None = None) -> Loaded:
        """Parse, load modules, apply modparams, check, compile. Raises LoadError with every diagnostic.

        `overrides` take the place of the script's modparam lines for the same (module, parameter), as
        if written after them (`routescript test` points a script's db_url at a scratch database); a
        wrong one is reported at its own position. `core_values` take the place of the script's core
        parameters of the same name, without a position (`routescript run --chroot DIR`: the modules'
        checks see it)."""
        from routescript.script import ScriptError, compile_script, parse_file

        server = self._server
        self.path = path
        try:
            ast = parse_file(path)
        except ScriptError as exc:
            raise LoadError(list(exc.diagnostics), exc.omitted) from None
        except OSError as exc:
            raise LoadError([Diagnostic(f"cannot read {path}: {exc.strerror or exc}")]) from None
        warnings: list[LoadDiagnostic] = list(ast.warnings)
        globals_ = _script.globals_of(ast, path)
        if core_values:
            globals_ = [g for g in globals_ if canonical_name(g[0]) not in core_values] + \
                [(name, cast("_script.GlobalValue", value), None) for name, value in core_values.items()]
        lms = _script.loadmodules_of(ast, path)
        mps = _with_overrides(_script.modparams_of(ast, path), overrides)
        # Every problem is collected, then reported at once in file order (a checker, not a first-error
        # stop): the modules routescript lacks, every refused modparam, every module check, the script.
        errors: list[LoadDiagnostic] = []
        # unknown core parameters are errors (OpenSIPS refuses them), reported with whatever else fails
        errors += [Diagnostic(text, pos) for text, pos in unknown_globals(globals_)]
        refused: list[ConfigError] = []   # every refused or bad core parameter, not only the first
        try:
            config, texts = apply_globals(globals_, refused)
            warnings += [Diagnostic(text, pos, "warning") for text, pos in texts]
        except ConfigError as exc:
            refused.append(exc)
            config = CoreConfig()
        errors += [config_diagnostic(exc) for exc in refused]
        warnings += _repeated_loadmodules(lms)
        classes, missing, problems = resolve_modules(lms)
        typed = type_modparams(classes, [*default_db_urls(config, classes, mps), *mps], missing)
        errors += [Diagnostic(missing_module_message(lm, typed.skipped.get(name, 0)), lm.pos)
                   for name, lm in missing.items()]
        errors += [config_diagnostic(e) for e in problems + typed.errors]
        server.config = config   # before the modules are made: they read it in __init__/check
        # The Server this loader belongs to is a ModuleHost (host.py checks it); this part sees it
        # through the narrower LoadingServer.
        modules, failed, problems = make_modules(classes, typed.values, cast("ModuleHost", server),
                                                 typed.refused)
        errors += [config_diagnostic(e) for e in problems]
        errors += _socket_module_errors(config, modules.instances)
        for ev in {e for m in modules.instances.values() for e in m.events}:
            server.events.declare(ev)
        registry = build_registry(modules, lms, failed.values(), config.listen_specs())
        compiled: CompiledScript | None = None
        omitted = 0
        try:
            compiled = compile_script(ast, registry, **config.compile_options())
        except ScriptError as exc:
            errors += exc.diagnostics
            omitted = exc.omitted
        # A module with a refused modparam refuses functions for the defaults it fell back to: not said.
        errors += self._refused_errors(ast, modules, typed.refused)
        if errors:   # the warnings found so far too: a checker's run says everything it saw
            raise LoadError(_in_file_order(errors + warnings), omitted)
        assert compiled is not None, "a script that failed to compile said why"
        warnings += self._unbuilt_warnings(ast, modules)
        server.modules, self.registry, self._routes.script = modules, registry, compiled
        register_module_statistics(server.statistics, server.counters, server)  # sl:, tm: when loaded
        self.loaded = Loaded(path, ast, config, compiled, warnings, lms, mps, globals_)
        return self.loaded

    def _unbuilt_warnings(self, ast: Script, modules: ModuleSet) -> list[LoadDiagnostic]:
        unbuilt: dict[str, str] = {}
        for m in modules.instances.values():
            unbuilt.update(m.unbuilt)
        out: list[LoadDiagnostic] = []
        for name, pos in _script.calls_of(ast, self.path):
            if name in unbuilt:
                out.append(Diagnostic(f"{name}(): {unbuilt[name]}", pos, "warning"))
        return out

    def _refused_errors(self, ast: Script, modules: ModuleSet,
                        misconfigured: set[str] | None = None) -> list[LoadDiagnostic]:
        """An error at every call of a function a module refuses in its configuration (Module.refused),
        but for the `misconfigured` modules (their configuration is an error already)."""
        refused: dict[str, str] = {}
        for name, m in modules.instances.items():
            if not misconfigured or name not in misconfigured:
                refused.update(m.refused)
        return [Diagnostic(f"{name}(): {refused[name]}", pos)
                for name, pos in _script.calls_of(ast, self.path) if name in refused]

    # ------------------------------------------------------------------ reload
    async def reload_routes(self) -> list[LoadDiagnostic]:
        """Compile the file again aside, with the same module instances, and swap it in when valid.

        Returns the diagnostics: errors (nothing swapped, the old script keeps running) and warnings
        (loadmodule/modparam/global changes are reported and ignored, as OpenSIPS's reload_routes does).
        Module state, subscriptions and sockets are untouched. Worker processes run the two halves,
        prepare_reload and commit_reload, apart: every worker prepares, then all commit or none
        (routescript/workers/supervisor.py).
        """
        async with self._reload_lock:
            prepared = self.prepare_reload()
            if prepared.errors:
                return prepared.errors
            self.commit_reload(prepared)
            return prepared.warnings

    def prepare_reload(self) -> PreparedReload:
        """Read and compile the file aside (nothing is swapped); the errors are logged."""
        from routescript.script import ScriptError, compile_script, parse_file

        old = self.loaded
        assert old is not None and self.registry is not None, "reload_routes before load"
        path = self.path
        modules = self._server.modules
        try:
            ast = parse_file(path)
            compiled = compile_script(ast, self.registry, **self._server.config.compile_options())
        except ScriptError as exc:
            diags: list[LoadDiagnostic] = list(exc.diagnostics)
            log.error("reload_routes: %s rejected, old script kept:\n%s", path,
                      "\n".join(str(d) for d in diags))
            return PreparedReload.failed(diags)
        except OSError as exc:
            d = Diagnostic(f"cannot read {path}: {exc.strerror or exc}")
            log.error("reload_routes: %s", d)
            return PreparedReload.failed([d])
        refused = self._refused_errors(ast, modules)
        if refused:
            log.error("reload_routes: %s rejected, old script kept:\n%s", path,
                      "\n".join(str(d) for d in refused))
            return PreparedReload.failed(refused)
        warnings = self._reload_warnings(old, ast) + self._unbuilt_warnings(ast, modules)
        return PreparedReload([], warnings, Loaded(path, ast, old.config, compiled, warnings, old.loadmodules,
                                                   old.modparams, old.globals), files_sha256(ast))

    def commit_reload(self, prepared: PreparedReload) -> None:
        """Swap in a script prepare_reload compiled without errors: cannot fail."""
        loaded = prepared.loaded
        assert loaded is not None and not prepared.errors, "commit_reload of a failed prepare"
        for w in prepared.warnings:
            log.warning("reload_routes: %s", w)
        # The swap: one attribute assignment between messages; a message already running keeps
        # the script it started with.
        self._routes.script = loaded.compiled
        self.loaded = loaded
        self._timers.refresh()   # loops for the timer routes the new script adds, once started
        log.info("reload_routes: %s reloaded (%d routes)", loaded.path, loaded.route_count)

    def _reload_warnings(self, old: Loaded, ast: Script) -> list[LoadDiagnostic]:
        out: list[LoadDiagnostic] = []
        old_lm = [lm.name for lm in old.loadmodules]
        for lm in _script.loadmodules_of(ast, self.path):
            if lm.name not in old_lm:
                out.append(Diagnostic(f"loadmodule \"{lm.path}\" ignored by reload_routes "
                                      "(restart to load it)", lm.pos, "warning"))
        old_mp = {(m.module, m.param, repr(m.value)) for m in old.modparams}
        for mp in _script.modparams_of(ast, self.path):
            if (mp.module, mp.param, repr(mp.value)) not in old_mp:
                out.append(Diagnostic(f"modparam(\"{mp.module}\", \"{mp.param}\") change ignored by "
                                      "reload_routes (restart to apply it)", mp.pos, "warning"))
        old_g = {(n, repr(v)) for n, v, _p in old.globals}
        for n, v, p in _script.globals_of(ast, self.path):
            if (n, repr(v)) not in old_g:
                out.append(Diagnostic(f"global parameter '{n}' change ignored by reload_routes", p,
                                      "warning"))
        return out


def _with_overrides(lines: list[ModParam], overrides: Sequence[ModParam]) -> list[ModParam]:
    replaced = {(o.module, o.param) for o in overrides}
    return [m for m in lines if (m.module, m.param) not in replaced] + list(overrides)


def _in_file_order(diagnostics: list[LoadDiagnostic]) -> list[LoadDiagnostic]:
    """Sorted by position (stable: one place's diagnostics keep their order); the unplaced ones first."""
    def key(d: LoadDiagnostic) -> tuple[int, str, int, int]:
        pos = d.pos
        return (0, "", 0, 0) if pos is None else (1, pos.file, pos.line, pos.col)
    return sorted(diagnostics, key=key)


# socket= protocols served by a module that must be loaded for them, as in OpenSIPS (proto_ws holds the
# WebSocket parameters); udp and tcp are built in.
_PROTO_MODULES = {"ws": "proto_ws", "tls": "proto_tls", "wss": "proto_wss"}


def _socket_module_errors(config: CoreConfig, loaded: Mapping[str, object]) -> list[LoadDiagnostic]:
    """An error at each socket= line whose protocol needs a module the script does not load."""
    errors: list[LoadDiagnostic] = []
    for spec in config.listen_specs():
        needed = _PROTO_MODULES.get(spec.proto)
        if needed is not None and needed not in loaded:
            also = " (and tls_mgm with its TLS domains)" if spec.proto in ("tls", "wss") else ""
            errors.append(Diagnostic(f"socket {spec.name}: {spec.proto} needs loadmodule "
                                     f"\"{needed}.so\"{also}", spec.pos))
    return errors


def _repeated_loadmodules(lms: list[LoadModule]) -> list[LoadDiagnostic]:
    """A module loaded a second time: one instance serves (OpenSIPS skips the repeated loadmodule too),
    but the second line usually means two copies of one snippet whose modparams now mix - said, not
    silently ignored."""
    first: dict[str, LoadModule] = {}
    out: list[LoadDiagnostic] = []
    for lm in lms:
        if lm.name in first:
            first_pos = first[lm.name].pos
            line = first_pos[1] if first_pos else "?"
            out.append(Diagnostic(f'module "{lm.name}" is loaded already (line {line}): this loadmodule '
                                  "adds nothing, and the modparams of both places apply to one module",
                                  lm.pos, "warning"))
        else:
            first[lm.name] = lm
    return out
