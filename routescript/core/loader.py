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
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .module import ConfigError, Module, ModuleSet, Param

if TYPE_CHECKING:
    from routescript.script.registry import Registry

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


def load_modules(lines: Iterable[LoadModule]) -> dict[str, tuple[type[Module], Pos | None]]:
    """Resolve every loadmodule line. Unknown module -> ConfigError at its line. Loading twice is harmless."""
    found: dict[str, tuple[type[Module], Pos | None]] = {}
    for line in lines:
        if line.name in found:
            continue
        cls = find_module_class(line.name)
        if cls is None:
            raise ConfigError(f"loadmodule: module '{line.name}' not found (from \"{line.path}\")", line.pos)
        found[line.name] = (cls, line.pos)
    for name, (cls, pos) in found.items():
        for dep in cls.depends:
            if dep not in found:
                raise ConfigError(f"module '{name}' depends on module '{dep}', which is not loaded", pos)
    return found


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


def apply_modparams(classes: dict[str, tuple[type[Module], Pos | None]],
                    lines: Iterable[ModParam]) -> dict[str, dict[str, Any]]:
    """Type every modparam with its Param and return the full parameter dict of each module (defaults
    included). Unknown module or parameter, or a wrong value -> ConfigError at the modparam's position."""
    values: dict[str, dict[str, Any]] = {}
    for name, (cls, _pos) in classes.items():
        values[name] = {p.name: (list(p.default or []) if p.multi else p.default) for p in cls.params}
    for line in lines:
        targets = _matching_modules(line.module, classes, line.pos)
        if not targets:
            raise ConfigError(f"modparam: module '{line.module}' is not loaded (loadmodule it first)",
                              line.pos)
        applied = False
        for name in targets:
            param = _find_param(classes[name][0].params, line.param)
            if param is None:
                continue
            try:
                typed = param.convert(line.value)
            except ValueError as exc:
                raise ConfigError(f"modparam(\"{name}\", \"{line.param}\"): {exc}", line.pos) from None
            if param.multi:
                values[name][param.name].append(typed)
            else:
                values[name][param.name] = typed
            applied = True
        if not applied:
            where = targets[0] if len(targets) == 1 else "any of " + ", ".join(targets)
            raise ConfigError(f"modparam: parameter '{line.param}' not found in module {where}", line.pos)
    return values


def _find_param(params: tuple[Param, ...], name: str) -> Param | None:
    for p in params:
        if p.name == name:
            return p
    return None


def instantiate(classes: dict[str, tuple[type[Module], Pos | None]], values: dict[str, dict[str, Any]],
                server: ModuleHost) -> ModuleSet:
    """One instance per module, in load order, then each module's check() (ConfigError at its loadmodule)."""
    modules = ModuleSet()
    for name, (cls, _pos) in classes.items():
        modules.instances[name] = cls(server, values[name])
    for name, inst in modules.instances.items():
        try:
            inst.check()
        except ConfigError as exc:
            if exc.pos is None:
                raise ConfigError(f"module '{name}': {exc.message}", classes[name][1]) from None
            raise
    return modules


def build_registry(modules: ModuleSet) -> Registry:
    """The script Registry: the core's pseudo-variables and transformations, then every module's exports."""
    from routescript.script.pvars import core_pvars
    from routescript.script.registry import Registry
    from routescript.script.transforms import core_transforms

    from .functions import core_functions

    reg = Registry()
    for fspec in core_functions():
        reg.add_function(fspec)
    for spec in core_pvars():
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
    return reg

