"""`loadmodule` and `modparam`: find module classes, type their parameters, make the instances.

OpenSIPS names a module by its shared object (`loadmodule "presence.so"`, an absolute path, or a bare
name resolved under `mpath`). We keep only the base name: `presence` is the package
`routescript.modules.presence`, or an entry of the `routescript.modules` entry-point group provided by
another distribution. The package's `MODULE` attribute is the Module subclass.

modparam's module name is a regular expression, as in OpenSIPS (modparam.c anchors it as `^(name)$`
and matches case-insensitively), so `modparam("tm|sl", ...)` sets the parameter in both; we also take
`mod1;mod2` lists (Kamailio and some OpenSIPS examples write those).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .environ import expand_env
from .module import ConfigError, Module, ModuleSet, Param

if TYPE_CHECKING:
    from routescript.script.registry import Registry

    from .config import ListenSpec
    from .host import ModuleHost

Pos = tuple[str, int, int]

ENTRY_POINT_GROUP = "routescript.modules"
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True, slots=True)
class LoadModule:
    """One `loadmodule` line, reduced to the module name."""

    name: str
    path: str
    pos: Pos | None = None


@dataclass(frozen=True, slots=True)
class ModParam:
    """One `modparam(module, param, value)` line."""

    module: str
    param: str
    value: Any   # the script's literal (int or str), typed later by the module's Param
    pos: Pos | None = None


def module_name(path: str) -> str:
    """`"/usr/lib64/opensips/modules/presence.so"` / `"presence.so"` / `"presence"` -> `"presence"`."""
    base = path.strip().replace("\\", "/").rsplit("/", 1)[-1]
    if base.endswith(".so"):
        base = base[:-3]
    return base


def _module_class_from(obj: object) -> type[Module] | None:
    # obj is a Python module (its MODULE attribute) or what an entry point names (the class itself)
    cls = getattr(obj, "MODULE", obj)
    if isinstance(cls, type) and issubclass(cls, Module):
        return cls
    return None


def find_module_class(name: str) -> type[Module] | None:
    """The Module class serving `name`: our package, an entry point, or a class listing it in `aliases`."""
    if not _NAME_RE.match(name):
        return None
    qualified = f"routescript.modules.{name}"
    if importlib.util.find_spec(qualified) is not None:
        cls = _module_class_from(importlib.import_module(qualified))
        if cls is not None:
            return cls
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            cls = _module_class_from(ep.load())
            if cls is not None:
                return cls
    # Last resort: a module that declares this name as an alias (e.g. an OpenSIPS module merged into another).
    import routescript.modules as pkg
    for info in pkgutil.iter_modules(pkg.__path__):
        cls = _module_class_from(importlib.import_module(f"routescript.modules.{info.name}"))
        if cls is not None and name in cls.aliases:
            return cls
    return None


Classes = dict[str, tuple[type[Module], Pos | None]]


def load_modules(lines: Iterable[LoadModule]) -> Classes:
    """Resolve every loadmodule line; the first problem raises ConfigError (resolve_modules lists all)."""
    found, missing, errors = resolve_modules(lines)
    if missing:
        first = next(iter(missing.values()))
        raise ConfigError(missing_module_message(first), first.pos)
    if errors:
        raise errors[0]
    return found


def resolve_modules(lines: Iterable[LoadModule]) -> tuple[Classes, dict[str, LoadModule], list[ConfigError]]:
    """Every loadmodule line resolved at once: (the classes found, the modules routescript does not have
    by name, one ConfigError per other problem). Loading twice is harmless. A missing module is one error
    at its loadmodule (missing_module_message), never one per modparam or dependent module."""
    found: Classes = {}
    missing: dict[str, LoadModule] = {}
    errors: list[ConfigError] = []
    for line in lines:
        if line.name in found or line.name in missing:
            continue
        cls = find_module_class(line.name)
        if cls is None:
            missing[line.name] = line
            continue
        found[line.name] = (cls, line.pos)
    for name, (cls, pos) in found.items():
        for dep in cls.depends:
            if dep not in found and dep not in missing:
                errors.append(ConfigError(f"module '{name}' depends on module '{dep}', which is not loaded",
                                          pos))
    return found, missing, errors


def missing_module_message(line: LoadModule, modparams: int = 0) -> str:
    """An OpenSIPS module routescript lacks reads as such; any other name as a path that leads nowhere.
    Its `modparams` are one note here, not an error each."""
    from routescript.script.opensips_functions import OPENSIPS_MODULES

    if line.name in OPENSIPS_MODULES:
        text = f"module '{line.name}' (loadmodule \"{line.path}\") is not implemented by routescript"
    else:
        text = (f"loadmodule: module '{line.name}' not found (from \"{line.path}\"): neither routescript "
                "nor OpenSIPS has a module of that name")
    if modparams:
        text += f" (its {modparams} modparam{'s' if modparams != 1 else ''} not checked)"
    return text


def _matching_modules(expr: str, loaded: Iterable[str], pos: Pos | None) -> list[str]:
    names = list(loaded)
    out: list[str] = []
    for raw in expr.split(";"):
        part = raw.strip()
        if not part:
            continue
        try:
            rx = re.compile(f"^({part})$", re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"modparam: bad module name expression \"{part}\": {exc}", pos) from None
        out.extend(n for n in names if rx.match(n) and n not in out)
    return out


def apply_modparams(classes: Classes, lines: Iterable[ModParam]) -> dict[str, dict[str, Any]]:
    """Type every modparam; the first problem raises ConfigError (type_modparams lists all)."""
    typed = type_modparams(classes, lines)
    if typed.errors:
        raise typed.errors[0]
    return typed.values


@dataclass(frozen=True, slots=True)
class TypedParams:
    """What type_modparams found: every module's parameter dict (defaults included), one ConfigError per
    refused modparam, the modules one was refused for, and how many modparams each missing module had."""

    values: dict[str, dict[str, Any]]
    errors: list[ConfigError]
    refused: set[str]
    skipped: dict[str, int]


def type_modparams(classes: Classes, lines: Iterable[ModParam], missing: Iterable[str] = ()) -> TypedParams:
    """Type every modparam with its Param; an unknown module or parameter or a wrong value is an error at
    the modparam's position. The modparams of a `missing` module (loaded, but not implemented) are only
    counted: its loadmodule's error says it."""
    values: dict[str, dict[str, Any]] = {}
    errors: list[ConfigError] = []
    refused: set[str] = set()
    skipped: dict[str, int] = {}
    for name, (cls, _pos) in classes.items():
        values[name] = {p.name: (list(p.default or []) if p.multi else p.default) for p in cls.params}
    absent = list(missing)
    for line in lines:
        try:
            targets = _matching_modules(line.module, classes, line.pos)
            if not targets and (absent_targets := _matching_modules(line.module, absent, line.pos)):
                for name in absent_targets:
                    skipped[name] = skipped.get(name, 0) + 1
                continue
        except ConfigError as exc:
            errors.append(exc)
            continue
        if not targets:
            errors.append(ConfigError(f"modparam: module '{line.module}' is not loaded (loadmodule it first)",
                                      line.pos))
            continue
        try:
            value = expand_env(line.value)   # $env(NAME): environ.py
        except ValueError as exc:
            errors.append(ConfigError(f"modparam(\"{line.module}\", \"{line.param}\"): {exc}", line.pos))
            refused.update(targets)
            continue
        applied = False
        for name in targets:
            param = _find_param(classes[name][0].params, line.param)
            if param is None:
                continue
            applied = True
            try:
                typed = param.convert(value)
            except ValueError as exc:
                errors.append(ConfigError(f"modparam(\"{name}\", \"{line.param}\"): {exc}", line.pos))
                refused.add(name)
                continue
            if param.multi:
                values[name][param.name].append(typed)
            else:
                values[name][param.name] = typed
        if not applied:
            where = targets[0] if len(targets) == 1 else "any of " + ", ".join(targets)
            errors.append(ConfigError(f"modparam: parameter '{line.param}' not found in module {where}",
                                      line.pos))
    return TypedParams(values, errors, refused, skipped)


def _find_param(params: tuple[Param, ...], name: str) -> Param | None:
    for p in params:
        if p.name == name:
            return p
    return None


def instantiate(classes: Classes, values: dict[str, dict[str, Any]], server: ModuleHost) -> ModuleSet:
    """One instance per module, in load order, then each module's check(); the first problem raises
    ConfigError at its loadmodule (make_modules lists all)."""
    modules, _failed, errors = make_modules(classes, values, server)
    if errors:
        raise errors[0]
    return modules


def make_modules(
        classes: Classes, values: dict[str, dict[str, Any]], server: ModuleHost,
        unchecked: Iterable[str] = ()) -> tuple[ModuleSet, dict[str, type[Module]], list[ConfigError]]:
    """One instance per module, in load order, then each module's check(): (the modules made, the classes
    that could not be made, one ConfigError per problem, at the module's loadmodule unless it says
    where). The `unchecked` modules (a modparam of theirs was refused) skip check(): it would judge
    defaults the script did not ask for."""
    modules = ModuleSet()
    failed: dict[str, type[Module]] = {}
    errors: list[ConfigError] = []
    skip = set(unchecked)

    def located(name: str, exc: ConfigError) -> ConfigError:
        if exc.pos is None:
            return ConfigError(f"module '{name}': {exc.message}", classes[name][1])
        return exc

    for name, (cls, _pos) in classes.items():
        try:
            modules.instances[name] = cls(server, values[name])
        except ConfigError as exc:
            failed[name] = cls
            errors.append(located(name, exc))
    for name, inst in modules.instances.items():
        if name in skip:
            continue
        try:
            inst.check()
        except ConfigError as exc:
            errors.append(located(name, exc))
    return modules, failed, errors


def build_registry(modules: ModuleSet, loaded: Iterable[LoadModule] = (),
                   failed: Iterable[type[Module]] = (),
                   listen: Sequence[ListenSpec] | None = None) -> Registry:
    """The script Registry: the core's pseudo-variables and transformations, then every module's exports.
    `loaded` (the script's loadmodule lines) and `failed` (module classes that could not be made) only
    shape the messages about functions the script calls and the registry lacks. `listen`: the socket=
    lines, against which force_send_socket's written-out arguments are checked (None: when called)."""
    from routescript.script.pvars import core_pvars
    from routescript.script.registry import Registry
    from routescript.script.transforms import core_transforms

    from .functions import core_functions
    from .relay import relay_functions
    from .routing import routing_functions, routing_pvars

    reg = Registry()
    for fspec in (*core_functions(), *routing_functions(reg, listen), *relay_functions()):
        reg.add_function(fspec)
    for spec in core_pvars() + routing_pvars(reg):
        reg.add_pvar(spec)
    for tspec in core_transforms():
        reg.add_transform(tspec)
    for inst in modules.instances.values():
        for fspec in inst.functions():
            reg.add_function(fspec)
        for pspec in inst.pvars():
            reg.add_pvar(pspec)
        for tspec in inst.transforms():
            reg.add_transform(tspec)
    for lm in loaded:
        reg.loaded_modules.setdefault(lm.name, find_module_class(lm.name) is not None)
    for cls in failed:
        reg.unreported_functions |= cls.function_names()
    reg.module_available = lambda name: find_module_class(name) is not None
    return reg

