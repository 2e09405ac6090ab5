"""The core MI commands, named and shaped as OpenSIPS 3.4's mi/mi_core.c and statistics.c export them.

Kept: uptime, version, pwd, arg, which [command], ps, kill, log_level [level [pid]],
xlog_level [level], get_statistics / list_statistics / reset_statistics, reload_routes,
help [mi_cmd], list_tcp_conns, events_list, event_subscribe event socket [expire],
subscribers_list [event [socket]] (also as events_subscribers_list), raise_event event [params].
Left out (nothing behind them here): cache_store/cache_fetch/cache_remove (no cachedb), mem_*_dump
and shm_check (no shared memory), log_level_filter/log_mute_state (3.5+).

One process runs everything here, so `ps` lists one and `log_level`'s pid must be ours. With worker
processes each command runs where its `workers=` says (docs/workers.md, section 5): the supervisor
answers `ps` (its rows: routescript/workers/supervisor.py), get_statistics and list_statistics from the
workers' merged statistics (MIRegistry.gather_statistics), reload_routes as the all-or-none reload of
every worker (MIRegistry.reload_routes), and forwards the others (MIRegistry.forward).
`kill` stops the server cleanly, but only through a transport whose module allows it
(modparam("mi_fifo" | "mi_http", "enable_kill", 1)): OpenSIPS always allows it; we choose to refuse
it by default because an HTTP listener may be reachable by more people than the FIFO file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import sys
import time
from typing import TYPE_CHECKING, Any

from routescript.core.module import MIError, Module, mi_command

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from routescript.core.evi import EventInterface, Subscriber
    from routescript.core.host import ModuleHost
    from routescript.core.stats import Statistics

    from .registry import MIRegistry

from .jsonrpc import INVALID_PARAMS, SERVER_ERROR, JSONRPCError

log = logging.getLogger("routescript.mi")

# OpenSIPS's log levels, L_ALERT (-3) .. L_DBG (4): its `log_level` / `xlog_level` take only these
# (Core MI docs: "debug level (-3...4)"). Anything else (99999999999999999999, -7) is refused.
MIN_LOG_LEVEL, MAX_LOG_LEVEL = -3, 4


def _checked_level(level: int) -> int:
    if not MIN_LOG_LEVEL <= level <= MAX_LOG_LEVEL:
        raise JSONRPCError(INVALID_PARAMS, data=f"Bad log level {level}: accepted are {MIN_LOG_LEVEL} "
                           f"(L_ALERT) .. {MAX_LOG_LEVEL} (L_DBG)")
    return level


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("routescript")
    except Exception:  # noqa: BLE001 - not installed (a source checkout)
        return "0.1.0"


def server_string() -> str:
    """Like OpenSIPS's SERVER_HDR without "Server: ": `routescript (0.1.0 (x86_64/linux))`."""
    return f"routescript ({_version()} ({platform.machine() or 'unknown'}/{sys.platform}))"


class CoreMI(Module):
    """Not a loadable module: the holder of the core commands (module name "core" in `help`)."""

    name = "core"

    def __init__(self, server: ModuleHost, params: dict[str, Any], *, registry: MIRegistry) -> None:
        super().__init__(server, params)
        self.registry = registry  # the registry these commands are served from (which, help, kill ...)
        self._log_level = server.config.log_level     # what MI log_level / xlog_level change at run time
        self._xlog_level = server.config.xlog_level
        self._stop_task: asyncio.Task[Any] | None = None

    # ---------------------------------------------------------------- time, identity
    @mi_command("uptime", workers="supervisor",
                doc="prints various time information about routescript - when it started to run, "
                "for how long it runs")
    def uptime(self) -> dict[str, Any]:
        now = self.registry.clock()
        since = self.registry.started_at
        return {"Now": time.ctime(now), "Up since": time.ctime(since),
                "Up time": f"{int(max(0, now - since))} [sec]"}

    @mi_command("version", workers="supervisor", doc="prints the version string of a running routescript")
    def version(self) -> dict[str, Any]:
        return {"Server": server_string()}

    @mi_command("pwd", workers="supervisor", doc="prints the working directory of routescript")
    def pwd(self) -> dict[str, Any]:
        return {"WD": os.getcwd()}

    @mi_command("arg", workers="supervisor", doc="returns the full list of arguments used at startup")
    def arg(self) -> list[str]:
        return list(sys.argv)

    @mi_command("which", workers="supervisor", optional=("command",), doc="lists all available MI commands")
    def which(self, command: str | None = None) -> list[Any]:
        reg = self.registry
        if command is None:
            names: list[Any] = reg.names()
            return names
        recipes = reg.recipes(command)
        if recipes is None:
            raise MIError("unknown MI command", 404)
        return [list(r) for r in recipes]

    @mi_command("help", workers="supervisor",
                optional=("mi_cmd",), doc="prints information about MI commands usage")
    def help(self, mi_cmd: str | None = None) -> Any:
        if mi_cmd is None:
            return "Usage: help mi_cmd - returns information about 'mi_cmd'"
        cmd = self.registry.lookup(mi_cmd)
        if cmd is None:
            raise MIError("unknown MI command", 404)
        doc = " ".join((cmd.doc or "").split()) or "not available for this command"
        return {"Help": doc, "Exported by": cmd.module}

    @mi_command("ps", workers="supervisor", doc="lists all processes used by routescript")
    def ps(self) -> dict[str, Any]:
        if self.registry.processes is not None:
            return {"Processes": self.registry.processes()}
        return {"Processes": [{"ID": 0, "PID": os.getpid(), "Type": "main (event loop)"}]}

    # ---------------------------------------------------------------- control
    @mi_command("kill", workers="supervisor", doc="terminates routescript (when the MI transport allows it)")
    def kill(self) -> str:
        if not self.registry.kill_allowed:
            raise MIError("kill is disabled on this MI transport; enable it with "
                          "modparam(\"mi_fifo\", \"enable_kill\", 1) or "
                          "modparam(\"mi_http\", \"enable_kill\", 1)")
        stop = self.server.stop
        log.warning("kill requested over MI: stopping")
        loop = asyncio.get_running_loop()
        # After this reply has gone out: stopping closes the MI listener that carries it.
        loop.call_soon(self._spawn_stop, stop)
        return "OK"

    def _spawn_stop(self, stop: Callable[[], Awaitable[bool]]) -> None:
        self._stop_task = asyncio.ensure_future(stop())

    @mi_command("log_level", workers="concat", optional=("level", "pid"),
                doc="gets/sets the per process or global log level in routescript")
    def log_level(self, level: int | None = None, pid: int | None = None) -> dict[str, Any]:
        if level is None:
            return {"Processes": [{"PID": os.getpid(), "Log level": self._log_level,
                                   "Type": "main (event loop)"}]}
        _checked_level(level)
        if pid is not None and pid != os.getpid():
            raise JSONRPCError(INVALID_PARAMS, data="Bad PID")
        from routescript.core.log import py_level

        self._log_level = level
        logging.getLogger("routescript").setLevel(py_level(level))
        return {"Log level": level} if pid is not None else {"New global log level": level}

    @mi_command("xlog_level", workers="each", optional=("level",),
                doc="gets/sets the per process or global xlog level in routescript")
    def xlog_level(self, level: int | None = None) -> dict[str, Any]:
        if level is None:
            return {"xLog Level": self._xlog_level}
        _checked_level(level)
        from routescript.core.log import py_level

        self._xlog_level = level
        logging.getLogger("routescript.xlog").setLevel(py_level(level))
        return {"New xLog level": level}

    @mi_command("reload_routes", workers="supervisor", doc="triggers the script (routes only) reload")
    async def reload_routes(self) -> Any:
        reload = self.registry.reload_routes or self.server.reload_routes
        diags = list(await reload())
        errors = [str(d) for d in diags if getattr(d, "severity", "error") != "warning"]
        warnings = [str(d) for d in diags if getattr(d, "severity", "error") == "warning"]
        if errors:
            # OpenSIPS answers 500 "reload failed" and logs why; we also hand the reasons back.
            raise JSONRPCError(SERVER_ERROR, "reload failed", errors + warnings)
        if warnings:
            return {"Status": "OK", "Warnings": warnings}
        return "OK"

    # ---------------------------------------------------------------- statistics
    @mi_command("get_statistics", workers="supervisor",
                doc="prints the statistics (all, group or one) realtime values.")
    async def get_statistics(self, statistics: list[str]) -> dict[str, int]:
        stats = await self._statistics()
        out: dict[str, int] = {}
        found = False
        for item in _names(statistics, "statistics"):
            if item == "all":
                for s in stats.all():
                    out[s.full_name] = s.value
                found = True
            elif len(item) > 1 and item.endswith(":"):
                if not stats.has_module(item[:-1]):
                    continue
                for s in stats.module(item[:-1]):
                    out[s.full_name] = s.value
                found = True
            else:
                one = stats.get(item)
                if one is None:
                    continue
                out[one.full_name] = one.value
                found = True
        if not found:
            raise MIError("Statistics Not Found", 404)
        return out

    @mi_command("list_statistics", workers="supervisor", optional=("statistics",),
                doc="lists all the registered statistics and their types")
    async def list_statistics(self, statistics: list[str] | None = None) -> dict[str, str]:
        stats = await self._statistics()

        def kind(s: Any) -> str:
            return "incremental" if s.incremental else "non-incremental"

        if statistics is None:
            return {s.full_name: kind(s) for s in stats.all()}
        out: dict[str, str] = {}
        found = False
        for item in _names(statistics, "statistics"):
            if len(item) > 1 and item.endswith(":"):
                if not stats.has_module(item[:-1]):
                    continue
                out.update({s.full_name: kind(s) for s in stats.module(item[:-1])})
                found = True
            else:
                s = stats.get(item)
                if s is None:
                    continue
                out[s.name] = kind(s)  # OpenSIPS prints a single statistic without its group
                found = True
        if not found:
            raise MIError("Statistics Not Found", 404)
        return out

    async def _statistics(self) -> Statistics:
        """This process's statistics, or with worker processes the workers' merged (the supervisor's
        own counters count nothing: it handles no SIP message)."""
        gather = self.registry.gather_statistics
        return await gather() if gather is not None else self.registry.statistics

    @mi_command("reset_statistics", workers="each", doc="resets the value of a statistic variable")
    def reset_statistics(self, statistics: list[str]) -> str:
        found = False
        for item in _names(statistics, "statistics"):
            s = self.registry.statistics.get(item)
            if s is None:
                continue
            s.reset()
            found = True
        if not found:
            raise MIError("Statistics Not Found", 404)
        return "OK"

    # ---------------------------------------------------------------- connections, events
    @mi_command("list_tcp_conns", workers="concat", doc="list all ongoing TCP based connections")
    def list_tcp_conns(self) -> dict[str, Any]:
        transport = self.server.transport
        out = []
        for c in transport.connections() if transport is not None else ():
            src, info = c.source, c.info   # None until the connection is made
            out.append({
                "ID": c.conn_id,
                "Type": src.proto if src is not None else "tcp",   # tcp, tls, ws, wss (OpenSIPS's names)
                "State": "closed" if c.closed else "open",
                "Remote": f"{src.remote_host}:{src.remote_port}" if src is not None else "?:?",
                "Local": f"{info.host}:{info.port}" if info is not None else "?:?",
                "Outgoing": c.outgoing,
            })
        return {"Connections": out}

    @mi_command("events_list", workers="one",
                doc="lists all the events advertised through the Event Interface")
    def events_list(self) -> dict[str, Any]:
        return {"Events": [{"name": name, "id": i} for i, name in enumerate(self._declared_events())]}

    def _declared_events(self) -> list[str]:
        """Declared events in id order (ids are positions in this list, as events_list shows them)."""
        return sorted(self.server.events.declared)

    def _evi(self) -> EventInterface:
        from routescript.core.evi import event_interface

        return event_interface(self.server)

    @mi_command("event_subscribe", workers="each", optional=("expire",),
                doc="subscribes an external application (socket) to an event; expire 0 unsubscribes")
    async def event_subscribe(self, event: str, socket: str, expire: int | None = None) -> str:
        from routescript.core.evi import DEFAULT_EXPIRE, SubscribeError

        if expire is not None and expire < 0:
            raise JSONRPCError(INVALID_PARAMS, data="Negative expire value")
        if not event or not socket:
            raise JSONRPCError(INVALID_PARAMS)
        try:
            await self._evi().subscribe(event, socket, DEFAULT_EXPIRE if expire is None else expire)
        except SubscribeError as exc:
            # OpenSIPS answers 400 "Bad parameter value" (and logs why); we hand the reason back too.
            raise JSONRPCError(400, "Bad parameter value", str(exc)) from None
        return "OK"

    @mi_command("subscribers_list", workers="one",
                aliases=("events_subscribers_list",), optional=("event", "socket"),
                doc="lists all the Event Interface subscribers; Params: [ event [ subscriber ]]")
    async def subscribers_list(self, event: str | None = None, socket: str | None = None) -> dict[str, Any]:
        from routescript.core.evi import SubscribeError

        evi = self._evi()
        ids = {name: i for i, name in enumerate(self._declared_events())}
        if event is None:
            out = []
            for name, i in ids.items():
                subs = evi.subscribers(name)
                if subs:  # OpenSIPS lists only events that have subscribers
                    out.append({"name": name, "id": i, "Subscribers": [_subscriber(s) for s in subs]})
            return {"Events": out}
        if event not in ids:
            raise MIError("Event not published", 404)
        if socket is None:
            return {"Event": {"name": event, "id": ids[event],
                              "Subscribers": [_subscriber(s) for s in evi.subscribers(event)]}}
        try:
            sub = await evi.find(event, socket)
        except SubscribeError:
            sub = None
        if sub is None:
            raise MIError("Subscriber does not exist", 404)
        return {"Event": {"name": event, "id": ids[event], "Subscriber": _subscriber(sub)}}

    @mi_command("raise_event", workers="one", optional=("params",),
                doc="raises an event through the Event Interface; Params: event [ params ]")
    async def raise_event(self, event: str, params: Any = None) -> str:
        if event not in self._declared_events():
            raise MIError("Event not registered", 400)
        if params is None:
            values: dict[str, Any] = {}
        elif isinstance(params, dict):
            values = dict(params)
        elif isinstance(params, list):
            # OpenSIPS sends unnamed values as they come; our events carry named ones: 1, 2, ... as
            # $param(1), $param(2) name them in a route.
            values = {str(i): v for i, v in enumerate(params, 1)}
        else:
            raise JSONRPCError(INVALID_PARAMS, data="Bad type for parameter 'params'")
        await self.server.events.raise_event(event, values)
        return "OK"


def _subscriber(sub: Subscriber) -> dict[str, Any]:
    """One subscriber as OpenSIPS prints it: its socket and its expire (seconds, or "never")."""
    return {"socket": sub.socket, "expire": sub.expire if sub.expire is not None else "never"}


def _names(value: list[Any], param: str) -> list[str]:
    """The string items of an array parameter (numbers printed, as OpenSIPS's get_mi_arr_param_string)."""
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(str(item))
        else:
            raise JSONRPCError(INVALID_PARAMS, data=f"Bad type for array item in parameter '{param}'")
    return out
