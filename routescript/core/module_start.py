"""Starting the loaded modules: each after those it depends on or uses (ModuleSet.start_order), only
those that run in this kind of process (Module.runs_in), and each one's stop() on the CloseStack first."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .loading import Diagnostic, Loaded, LoadError
from .module import ConfigError, Module, ModuleSet, RunsIn

if TYPE_CHECKING:
    from .close_stack import CloseStack
    from .privileges import RunAs

log = logging.getLogger("routescript.core")

# Which modules each kind of process starts (Module.runs_in); one process alone starts them all.
ALL_MODULES: frozenset[RunsIn] = frozenset({"workers", "supervisor", "both"})
WORKER_MODULES: frozenset[RunsIn] = frozenset({"workers", "both"})
SUPERVISOR_MODULES: frozenset[RunsIn] = frozenset({"supervisor", "both"})


async def start_modules(modules: ModuleSet, loaded: Loaded, closing: CloseStack, target: RunAs | None,
                        runs_in: frozenset[RunsIn] = ALL_MODULES) -> None:
    """Every module's start() whose Module.runs_in is in `runs_in`, each after the modules it needs
    (ModuleSet.start_order: load order otherwise); one that fails refuses the start, its error said at
    its loadmodule (`target`: the account the server runs as, named in it). Each one's stop() goes on
    the CloseStack, so they stop in the reverse order."""
    for name in modules.start_order():
        mod = modules.instances[name]
        if not _starts_here(mod, runs_in):
            continue
        # stop() undoes whatever part of start() ran, so it is registered before start() runs
        # (OpenSIPS calls every module's destroy at clean-up, whether its init succeeded or not).
        closing.push(f"module {name}", mod.stop)
        try:
            await mod.start()
        except Exception as exc:
            # mod_init failed (e.g. the database is unreachable): refuse to run
            pos = loaded.loadmodule_pos(name)
            msg = exc.message if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            if target is not None:
                msg += (f" (the server runs as {target.describe()} from the moment its SIP sockets "
                        "are bound: that account must be able to open what this module uses)")
            raise LoadError([Diagnostic(f"module '{name}' failed to start: {msg}", pos)]) from exc
        log.debug("module %s started", name)


def _starts_here(module: Module, runs_in: frozenset[RunsIn]) -> bool:
    return module.runs_in in runs_in
