"""The server's life (the Lifecycle): start in named steps (sockets, privileges, transactions, modules,
startup_route, timers, serving), stop, serve_forever with its signals. The steps are done by the parts
named below; the Lifecycle runs them in order.

start() runs these steps in order; each one that opens something registers how to close it on the
CloseStack (close_stack.py), so a failed start closes what it opened (last first) and stop() closes
everything:

    bind_sockets        the transport and every listen= socket, below 1024 as root (transport_setup.py)
    confine             chroot: what the server may import is imported, then the new root (confinement.py)
    write_pid_file      pid_file (-P), still as the starting user (pidfile.py); inside the chroot
    drop_privileges     wdir, then user/group (privileges.py says why here)
    make_transactions   the transaction layer (tm's timers; transaction_setup.py)
    start_modules       every module's start(), each after those it depends on or uses (module_start.py)
    run_startup_route   startup_route, once the dispatcher takes messages
    timers.start        the timer_route loops
    serve               only now read the SIP sockets, then READY=1 to systemd (sdnotify.py)

With worker processes (docs/workers.md, routescript/workers/) the steps are shared out: the supervisor
binds the sockets, enters the chroot and drops privileges itself, then start_supervisor() starts only the
modules that run there (Module.runs_in: the MI listeners); each worker runs start_worker(): adopt_sockets
(the inherited fds) in place of bind_sockets, confine and drop_privileges, the worker-side modules, and
startup_route and the timer_routes in worker 0 only (OpenSIPS runs them once).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Protocol

from routescript.db import abandon_open_connections
from routescript.script.context import STARTUP_ROUTE, MsgContext
from routescript.sip import SocketInfo
from routescript.transaction import TransactionLayer
from routescript.transport import TransportLayer

from .close_stack import CloseStack, log_left_running, sync_close
from .config import CoreConfig
from .confinement import Confinement
from .dispatch import MessageDispatcher
from .events import EventBus
from .health import LoopLagMonitor
from .loading import ConfigLoader
from .log import NOTICE, LogSettings, setup_logging
from .module import ModuleSet, RunsIn
from .module_start import ALL_MODULES, SUPERVISOR_MODULES, WORKER_MODULES, start_modules
from .privileges import RunAs
from .sdnotify import NO_NOTIFIER, SystemdNotifier, reload_telling
from .routes import Routes
from .shared_databases import Databases
from .stats import CoreCounters
from .timers import Timers
from .transaction_setup import make_transactions
from .transport_setup import TransportFactory, TransportSetup

if TYPE_CHECKING:
    import socket

    from .relay import Relay
    from .requests import RequestSender

log = logging.getLogger("routescript.core")

STOP_GRACE = 5.0  # seconds in-flight messages get at shutdown: shutdown_timeout's default


class StartingServer(Protocol):
    """What start() reads of the Server, and the layers it gives it (server.transport and
    server.transactions are what modules use)."""

    transport: TransportLayer | None
    transactions: TransactionLayer | None
    requests: RequestSender | None
    relay: Relay | None

    @property
    def config(self) -> CoreConfig: ...

    @property
    def modules(self) -> ModuleSet: ...

    @property
    def events(self) -> EventBus: ...

    @property
    def counters(self) -> CoreCounters: ...

    @property
    def sockets(self) -> list[SocketInfo]: ...


class WorkerHooks(Protocol):
    """What start_worker asks of the worker's connections to the others (routescript/workers/node.py:
    WorkerNode)."""

    @property
    def conn_id_base(self) -> int: ...

    def prepare(self) -> None: ...

    def attach(self, transport: TransportLayer) -> None: ...

    def serve(self) -> None: ...

    def detach(self) -> None: ...


class Lifecycle:
    """Server.start, stop and serve_forever."""

    def __init__(self, server: StartingServer, loader: ConfigLoader, routes: Routes,
                 dispatcher: MessageDispatcher, timers: Timers, databases: Databases,
                 loop_lag: LoopLagMonitor | None = None) -> None:
        self._server = server
        self._loop_lag = loop_lag
        self._loader = loader
        self._routes = routes
        self._dispatcher = dispatcher
        self._timers = timers
        self._databases = databases
        self.started = False
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Future[bool] | None = None   # the stop under way (stop())
        self._closing = CloseStack()
        # systemd's notification socket (sdnotify.py): `routescript run` sets it, in the main process only
        self.notifier: SystemdNotifier = NO_NOTIFIER
        self._stop_requested = asyncio.Event()   # SIGINT/SIGTERM (handle_signals)
        self._handling_signals = False
        self.confinement = Confinement(server, loader)              # chroot, pid file, user/group
        self.transport_setup = TransportSetup(server, dispatcher.on_message)   # server.transport

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        """Bind the SIP sockets, drop privileges (user/group), make the transaction layer, start the
        modules, run startup_route and the timers, and only then read the SIP sockets.

        Every step that opens something registers how to close it (self._closing); when a later step
        fails, everything opened so far is closed, last first, before the error goes up - a failed
        start leaves no socket, database connection or thread behind, so `routescript run` exits."""
        self.start_logging()
        await self._start(self.transport_setup.bind_sockets, privileges=True, runs_in=ALL_MODULES)
        listening = ", ".join(s.name for s in self._server.sockets)
        log.log(NOTICE, "routescript started: %s, listening on %s", self._loader.path, listening)
        self.notifier.ready(f"listening on {listening}")

    async def start_simulated(self, make_transport: TransportFactory) -> None:
        """start() for `routescript test` (routescript/testing/scenario): the transport is
        `make_transport`'s (a simulated network, no socket), the process keeps its identity, root
        and directory (user/group/chroot/wdir are not applied: it is the test runner's process), the
        logging is the caller's, and the supervisor's modules (the MI and HTTP listeners) are not
        started - their MI commands are called in process instead."""
        async def bind(closing: CloseStack) -> TransportLayer:
            return await self.transport_setup.bind_sockets(closing, make_transport)

        await self._start(bind, privileges=False, runs_in=WORKER_MODULES)

    async def _start(self, bind: Callable[[CloseStack], Awaitable[TransportLayer]], *, privileges: bool,
                     runs_in: frozenset[RunsIn]) -> None:
        self._stopping = None   # a server stopped before may start again
        self._closing = closing = CloseStack()
        try:
            # Shared database handles are opened by the modules (server.database) and used by their
            # stop(): closed after every module, so registered first.
            closing.push("the databases", self._databases.close_all)
            transport = await bind(closing)
            target = None
            if privileges:   # `routescript run`'s process (not a `routescript test` run)
                self.confinement.confine(self.notifier)
                pid_file = self.confinement.write_pid_file()
                if pid_file is not None:
                    closing.push("the pid file", sync_close(pid_file.remove))
                target = self.confinement.drop_privileges()
            make_transactions(self._server, closing, transport)
            closing.push("the events", self._server.events.drain)
            await self._start_modules(closing, target, runs_in)
            self._set_started(True)
            await self.run_startup_route()
            self._timers.start()
            self._watch_loop_lag(closing)
            await self.serve(transport)
        except BaseException:
            self._set_started(False)
            await closing.close_all()
            raise

    def start_logging(self) -> None:
        """Logging as the script sets it, then the load warnings and notes."""
        loaded = self._loader.loaded
        assert loaded is not None, "start before load"
        cfg = self._server.config
        setup_logging(LogSettings.of(cfg))
        for w in loaded.warnings:
            log.warning("%s", w)
        for note in cfg.notes:
            log.info("%s", note)

    async def start_worker(self, sockets: Sequence[tuple[socket.socket, bool, str]], *, timers: bool,
                           startup_route: bool, node: WorkerHooks | None = None) -> None:
        """A worker process's start (routescript/workers/child.py): the supervisor bound `sockets` (each
        with whether this worker reads it) and dropped privileges before forking. The timer_routes run
        where `timers` (worker 0), startup_route where `startup_route` (worker 0's first start: OpenSIPS
        runs it once). `node` connects this worker to the others (routescript/workers/node.py): prepared
        before the modules start, attached to the transport, serving its inbox with the sockets. A
        failed start closes what it opened, as start()."""
        # A worker restarted later is forked from a supervisor that waits on its own _stopped: an event
        # bound to the supervisor's loop, unusable on the worker's.
        self._stopped = asyncio.Event()
        self._stopping = None
        self._closing = closing = CloseStack()
        try:
            closing.push("the databases", self._databases.close_all)
            transport = await self.transport_setup.adopt_sockets(
                closing, sockets, conn_id_base=node.conn_id_base if node is not None else 0)
            if node is not None:
                node.prepare()
                node.attach(transport)
                closing.push("the worker's inbox", sync_close(node.detach))
            make_transactions(self._server, closing, transport)
            closing.push("the events", self._server.events.drain)
            await self._start_modules(closing, self.confinement.identity(), WORKER_MODULES)
            self._set_started(True)
            if startup_route:
                await self.run_startup_route()
            if timers:
                self._timers.start()
            self._watch_loop_lag(closing)
            await self.serve(transport)
            if node is not None:
                node.serve()
        except BaseException:
            self._set_started(False)
            await closing.close_all()
            raise

    async def start_supervisor(self) -> None:
        """The supervisor's own part (routescript/workers/supervisor.py): the modules that run there (the
        MI listeners), started once every worker is ready; stop() stops them."""
        self._closing = closing = CloseStack()
        try:
            await self._start_modules(closing, self.confinement.identity(), SUPERVISOR_MODULES)
            self._set_started(True)
        except BaseException:
            self._set_started(False)
            await closing.close_all()
            raise

    async def wait_stopped(self) -> None:
        """Return once stop() is done (MI `kill` stops a supervisor this way)."""
        await self._stopped.wait()

    async def _start_modules(self, closing: CloseStack, target: RunAs | None,
                             runs_in: frozenset[RunsIn]) -> None:
        loaded = self._loader.loaded
        assert loaded is not None
        await start_modules(self._server.modules, loaded, closing, target, runs_in)

    async def run_startup_route(self) -> None:
        if self._routes.has(STARTUP_ROUTE, None):
            await self._routes.run(STARTUP_ROUTE, None,
                                   MsgContext(server=self._server, route_type=STARTUP_ROUTE))

    def _watch_loop_lag(self, closing: CloseStack) -> None:
        """process:loop_lag_ms sampled while the process serves (health.py)."""
        if self._loop_lag is None:
            return
        task = asyncio.ensure_future(self._loop_lag.run())

        async def cancel() -> None:
            task.cancel()
        closing.push("the loop lag sampler", cancel)

    async def serve(self, transport: TransportLayer) -> None:
        """Only now read the SIP sockets: what arrived during start-up waited in the kernel and is served
        now, its wait not counted against queue_delay_limit (it was not overload). The probes start
        with the reading, so the first ones do not age behind a long start-up either."""
        limit = max(0, int(self._server.config.get("queue_delay_limit"))) / 1000.0
        self._dispatcher.queue_delay_limit = limit
        await transport.start_serving()
        if limit:
            # the limit counts the time requests wait in the kernel's UDP buffers too
            transport.start_queue_probes()

    def _set_started(self, started: bool) -> None:
        """The dispatcher runs messages through the script only while the server is started."""
        self.started = started
        self._dispatcher.accepting = started

    # ------------------------------------------------------------------ stop
    async def stop(self) -> bool:
        """Stop receiving, let in-flight messages finish, stop the modules (their pending writes are
        committed: presence's group-commit queue, dialog's, usrloc's...), close everything.

        Bounded (docs/operations.md, "Stopping"): in-flight messages get shutdown_timeout seconds (then
        they are cancelled, unanswered), closing gets shutdown_timeout seconds more. False when the
        closing ran out of time (what was left is abandoned and said): `routescript run` exits 1.
        A stop() while another is under way (MI `kill`, then a signal or the caller's own stop) waits
        for that one's end and returns its answer."""
        if self._stopping is not None:
            return await asyncio.shield(self._stopping)
        if not self.started:
            self._stopped.set()
            return True
        self._stopping = asyncio.ensure_future(self._stop())
        return await asyncio.shield(self._stopping)

    async def _stop(self) -> bool:
        self._set_started(False)
        limit = float(self._server.config.get("shutdown_timeout") or STOP_GRACE)
        await self._timers.stop()
        await self._dispatcher.finish(limit)
        abandoned = await self._closing.close_all(limit)
        clean = not abandoned
        if abandoned:
            log.error("stopping: closing took more than %.0f s (shutdown_timeout): %s abandoned; writes "
                      "still pending there are lost", limit, ", ".join(abandoned))
            left_open = abandon_open_connections()
            if left_open:
                log.warning("stopping: databases left open, closed without waiting: %s", ", ".join(left_open))
            log_left_running()
        self._stopped.set()
        log.log(NOTICE, "routescript stopped")
        return clean

    def handle_signals(self) -> None:
        """SIGINT/SIGTERM ask for a stop, SIGHUP for a reload. `routescript run` installs them before
        start(): a SIGTERM right after READY=1 (or during start-up) stops the server cleanly instead of
        killing it with the default action."""
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop_requested.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        self._handling_signals = True

    async def serve_forever(self) -> bool:
        """Run until SIGINT/SIGTERM (or stop()); SIGHUP reloads the routes. Pings systemd's watchdog
        meanwhile. Returns stop()'s answer (False: the stop overran its bound)."""
        loop = asyncio.get_running_loop()
        if not self._handling_signals:
            self.handle_signals()
        stop_req = self._stop_requested
        watchdog = asyncio.ensure_future(self.notifier.watchdog())
        try:
            waiter = asyncio.ensure_future(stop_req.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            await asyncio.wait([waiter, stopped], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopped.cancel()
        finally:
            # a second SIGTERM while stopping (an impatient operator) must not cut the stop short
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, _already_stopping, sig)
            self.notifier.stopping()
            watchdog.cancel()
            try:
                clean = await self.stop()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
                self._handling_signals = False
        return clean

    def _reload_on_signal(self) -> None:
        reload: Coroutine[object, object, object] = reload_telling(self.notifier,
                                                                   self._loader.reload_routes())
        self._dispatcher.spawn(reload)


def _already_stopping(sig: int) -> None:
    log.warning("%s while stopping: ignored, the stop goes on (bounded by shutdown_timeout)",
                signal.Signals(sig).name)
