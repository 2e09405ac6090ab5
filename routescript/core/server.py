"""The running server: load a configuration, open the sockets, run the routes for every message.

    server = Server()
    server.load("examples/hello.cfg")      # parse, loadmodule, modparam, check(), compile
    await server.start()                   # sockets, transactions, modules' start(), startup_route, timers
    ...                                    # messages -> main route
    await server.stop()

What modules reach through `self.server` (their Module instance holds it):
  server.transactions   the TransactionLayer (create/reply server transactions, `await request(...)`)
  server.transport      the TransportLayer (sockets; send)
  server.requests       the RequestSender (core/requests.py: send a request in a dialog or to a destination)
  server.events         the EventBus (`await raise_event("E_...", {...})`, subscribe)
  server.modules        the other module instances (`server.modules.get("presence")`)
  server.config         the typed core parameters (CoreConfig)
  await server.database(url)   a shared routescript.db handle per URL, closed at stop
  server.send_reply(ctx, code, reason, ...)   a stateless reply carrying Server:, to-tag stable per request
  server.is_myself(host, port)                 the listening sockets and alias= names

Server is composed, not inherited: its constructor makes the parts, each owning its state, and wires
them together (the one place that does):
  routes      Routes: the compiled script, swapped whole by reload_routes (routes.py)
  replier     Replier: make_reply, reply, send_reply, the core's own 503s (replies.py)
  dispatcher  MessageDispatcher: the transport's callback, the bounds on messages in flight, overload
              shedding, a message through its route (dispatch.py)
  timers      Timers: the timer_route loops (timers.py)
  loader      ConfigLoader: load, reload_routes, the load diagnostics (loading.py)
  lifecycle   Lifecycle: start in named steps, stop, serve_forever (lifecycle.py)
  databases   Databases: the shared database handles, closed at stop (shared_databases.py)
The parts read the server's public state (config, transport, transactions, ...) through narrow
Protocols (layers.SipLayers, lifecycle.StartingServer, loading.LoadingServer), never each other's.
Server keeps is_myself and run_file; its other public names delegate to the parts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

from routescript.script import CompiledScript
from routescript.script.diagnostics import summary_lines, without_repeats
from routescript.sip import SocketInfo
from routescript.transaction import TransactionLayer
from routescript.transport import TransportLayer

from .config import CoreConfig
from .dispatch import (IN_DIALOG_ALLOWANCE, MAX_PENDING, MAX_RUNNING, MessageDispatcher,
                       _acks_our_stateless_reply, _has_pos, _where)
from .events import EventBus
from .health import LoopLagMonitor, register_health_statistics
from .lifecycle import STOP_GRACE, Lifecycle
from .loader import ModParam
from .loading import (LoadDiagnostic, ConfigLoader, Diagnostic, LoadError, Loaded, PlainDiagnostic,
                      _source_line, config_diagnostic)
from .module import ModuleSet
from .replies import Replier, _from_tag, _is_error_reply, _with_reply_headers, to_tag
from .relay import Relay
from .requests import RequestSender
from .routes import Routes
from .shared_databases import Databases
from .stats import CoreCounters, Statistics, register_core_statistics
from .timers import Timers
from .transport_setup import TransportFactory

if TYPE_CHECKING:
    from routescript.db import Database

    from .overrides import RunOptions
    from routescript.script.registry import Registry

__all__ = [
    "Server", "LoadError", "run_file", "install_event_loop_policy",
    "Diagnostic", "PlainDiagnostic", "config_diagnostic", "Loaded", "_source_line",
    "MAX_RUNNING", "MAX_PENDING", "STOP_GRACE", "IN_DIALOG_ALLOWANCE",
    "_from_tag", "_is_error_reply", "_with_reply_headers",
    "_acks_our_stateless_reply", "_has_pos", "_where",
]

log = logging.getLogger("routescript.core")


class Server:
    """One configuration, running on one asyncio event loop: the object modules, MI, the command line
    and the tests hold. The module docstring lists its parts."""

    to_tag = staticmethod(to_tag)

    def __init__(self) -> None:
        # What modules and MI reach (the module docstring lists them). Statistics exist before any
        # module is made, so modules register theirs in __init__/check/start; the core's per-message
        # counters are plain int attributes of self.counters (stats.py).
        self.config = CoreConfig()             # replaced by load()
        self.modules = ModuleSet()             # made by load()
        self.statistics = Statistics()
        self.counters = CoreCounters()
        self.transport: TransportLayer | None = None         # made by start() (transport_setup.py)
        self.transactions: TransactionLayer | None = None    # made by start() (transaction_setup.py)
        # The service modules send requests with ("send this request inside this dialog / to this
        # destination", requests.py), made with the transactions (transaction_setup.py).
        self.requests: RequestSender | None = None
        # "send this request on to this destination" (relay.py): tm's t_relay and forward()
        self.relay: Relay | None = None
        self.sockets: list[SocketInfo] = []

        # The parts, wired here and nowhere else.
        self.routes = Routes()
        self.events = EventBus(self.routes.run_event, self, self.routes.has_event, self.routes.run_event_now)
        register_core_statistics(self.statistics, self.counters, self)
        self.loop_lag = LoopLagMonitor()
        register_health_statistics(self.statistics, self.counters, self.loop_lag)
        self.replier = Replier(self, self.counters)
        self.dispatcher = MessageDispatcher(self, self.routes, self.replier, self.counters)
        self.timers = Timers(self.routes, self)
        self.loader = ConfigLoader(self, self.routes, self.timers)
        self.databases = Databases()
        self.lifecycle = Lifecycle(self, self.loader, self.routes, self.dispatcher, self.timers,
                                   self.databases, self.loop_lag)

        # The per-message names are the parts' own bound methods: no call in between on the hot path.
        self.handle_message = self.dispatcher.handle_message
        self.make_reply = self.replier.make_reply
        self.reply = self.replier.reply
        self.send_reply = self.replier.send_reply

    # ------------------------------------------------------------------ the parts' state, read here
    @property
    def path(self) -> str:
        return self.loader.path

    @property
    def loaded(self) -> Loaded | None:
        return self.loader.loaded

    @property
    def registry(self) -> Registry | None:
        return self.loader.registry

    @property
    def script(self) -> CompiledScript | None:
        """The compiled script messages run with; swapped whole by reload_routes."""
        return self.routes.script

    @property
    def started(self) -> bool:
        return self.lifecycle.started

    @property
    def queue_delay_limit(self) -> float:
        """Seconds (the core parameter is in ms); set by start()."""
        return self.dispatcher.queue_delay_limit

    # ------------------------------------------------------------------ life
    def load(self, path: str, overrides: Sequence[ModParam] = (),
             core_values: Mapping[str, object] | None = None) -> Loaded:
        """Parse, load modules, apply modparams, check, compile. Raises LoadError with every diagnostic.
        `overrides` replace the script's modparams of the same name, `core_values` its core parameters
        (loading.py)."""
        return self.loader.load(path, overrides, core_values)

    async def reload_routes(self) -> list[LoadDiagnostic]:
        """Compile the file again with the same modules and swap the routes in when valid (loading.py)."""
        return await self.loader.reload_routes()

    async def start(self) -> None:
        """Sockets, privileges, transactions, modules, startup_route, timers, then serve (lifecycle.py)."""
        await self.lifecycle.start()

    async def start_simulated(self, make_transport: TransportFactory) -> None:
        """start() on a transport made by `make_transport` (no sockets of its own), without changing the
        process's identity or directory and without the supervisor's listeners (lifecycle.py):
        `routescript test` runs a script in its own process this way."""
        await self.lifecycle.start_simulated(make_transport)

    async def stop(self) -> bool:
        """Stop receiving, let in-flight messages finish (bounded), stop the modules, close everything.
        False when closing overran shutdown_timeout (lifecycle.py)."""
        return await self.lifecycle.stop()

    async def serve_forever(self) -> bool:
        """Run until SIGINT/SIGTERM (or stop()); SIGHUP reloads the routes. False when the stop overran
        shutdown_timeout."""
        return await self.lifecycle.serve_forever()

    async def database(self, url: str) -> Database:
        """A routescript.db handle for `url`, opened once and shared; closed at stop()."""
        return await self.databases.get(url)

    # ------------------------------------------------------------------ identity
    def is_myself(self, host: str, port: int | None = None) -> bool:
        """True when host[:port] names one of our sockets or an alias= (OpenSIPS's check_self)."""
        from routescript.sip.hosts import normalize_host

        h = normalize_host(host)
        for info in self.sockets:
            ours = normalize_host(info.host)   # once per socket
            if ours == h and (port is None or port == info.port):
                return True
            if ours in ("0.0.0.0", "::") and port in (None, info.port) and h in (  # noqa: S104
                    "127.0.0.1", "::1", "localhost"):
                return True
        for alias in self.config.aliases:
            a_host, _, a_port = alias.rpartition(":") if alias.count(":") == 1 else (alias, "", "")
            if normalize_host(a_host or alias) == h and (port is None or not a_port or int(a_port) == port):
                return True
        advertised = self.config.get("advertised_address")
        return bool(advertised) and normalize_host(advertised) == h


def install_event_loop_policy() -> None:
    """uvloop when installed (DESIGN: one event loop, uvloop when available)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# Collector thresholds for a server (CPython's default is 700, 10, 10). A young collection runs every
# threshold0 allocations and promotes whatever is alive then - at thousands of requests a second that
# is every request in flight, with its parsed message, task and transaction - to the older generations;
# each promotion brings the next full collection (a pause that walks every long-lived object, the
# subscriptions and publications included) closer. Measured with 2,000 PUBLISH calls/s: the defaults
# made a full collection of 40-100 ms every half second (retransmissions, then collapse); threshold0 =
# 15000 (of 5000-20000 tried) kept PUBLISH at 2,000-2,200 calls/s. threshold1 sets the middle pause: a
# middle collection walks what the last threshold1 young ones promoted. With 8 it took 50-66 ms every
# 10-15 s at 1,500 PUBLISH calls/s - about 1% of the requests of a 10 s run waited for it, which made
# the p99; with 2 it takes 17-21 ms (p99 56-64 -> 40-44 ms at that rate, SUBSCRIBE at 1,000 calls/s
# 12-16 ms). threshold2 stays 100 (CPython also waits for the long-lived set to grow by a quarter).
GC_THRESHOLDS = (15_000, 2, 100)

def tune_collector() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


async def run_file(path: str, options: RunOptions | None = None) -> int:
    """`routescript run` in one process: load, start, serve until a stop signal. Returns the exit status:
    1 when the configuration cannot be loaded or start-up fails (everything start() opened is closed by
    then, so the process ends at once). `options` (the command line's -u, -g, -P...) take the place of
    the script's own values."""
    try:
        server = load_for_run(path, options)
    except LoadError as exc:
        log_load_error(exc)
        return 1
    return await run_loaded(server)


def load_for_run(path: str, options: RunOptions | None = None) -> Server:
    """Load `path` for `routescript run` with the command line's overrides (overrides.py); LoadError
    with every diagnostic."""
    from .overrides import RunOptions, apply_overrides, core_values

    options = options or RunOptions()
    server = Server()
    server.load(path, core_values=core_values(options))
    apply_overrides(server.config, options)
    return server


def log_load_error(exc: LoadError) -> None:
    """Every diagnostic of a failed load or start, then the summary line, as `routescript run` logs them."""
    shown = without_repeats(exc.diagnostics)
    for d in shown:
        log.error("%s", d)
    for line in summary_lines(shown, exc.omitted):
        log.error("%s", line)


def freeze_loaded_objects() -> None:
    """What loading made (the grammar, the compiled script, modules) lives as long as the process: out of
    the collector's sight, a full collection - a pause of every message - only walks what the traffic
    made (and, in worker processes, the pages stay shared after fork). Only for `routescript run`, not in
    Server.load(): tests load many servers in one process."""
    gc.collect()
    gc.freeze()
    tune_collector()


async def run_loaded(server: Server) -> int:
    """Start a loaded server in this process and serve until a stop signal (run_file's second half)."""
    try:
        # Before start(), so that no signal can arrive between "listening" and serve_forever()'s
        # signal handlers while a collection runs.
        freeze_loaded_objects()
        server.lifecycle.handle_signals()   # before READY=1 / "started": a SIGTERM then stops cleanly
        await server.start()
    except LoadError as exc:
        log_load_error(exc)
        return 1
    except Exception:  # our bug: start() closed what it opened; say so and exit
        log.exception("start-up failed")
        return 1
    clean = await server.serve_forever()
    if not clean:
        exit_at_once(1)
    return 0


def exit_at_once(code: int) -> NoReturn:
    """The stop abandoned a close (logged with what is left running): a task that ignores its
    cancellation or a thread blocked for ever (a database's, an executor's) would hold asyncio.run's
    teardown or the interpreter's join of its threads, and the process would never end. The steps after
    the stuck one ran (sockets, pid file, databases), so it ends here, with what was logged flushed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
