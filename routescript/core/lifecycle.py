"""The server's life (the Lifecycle): start in named steps (sockets, privileges, transactions, modules,
startup_route, timers, serving), stop, serve_forever with its signals; and the shared database handles.

start() runs these steps in order; each one that opens something registers how to close it on the
CloseStack, so a failed start closes what it opened (last first) and stop() closes everything:

    bind_sockets        the transport and every listen= socket (ports below 1024 need root)
    confine             chroot: what the server may import is imported, then the new root (chroot.py)
    write_pid_file      pid_file (-P), still as the starting user (pidfile.py); inside the chroot
    drop_privileges     wdir, then user/group (privileges.py says why here)
    make_transactions   the transaction layer (tm's timers)
    start_modules       every module's start(), each after those it depends on or uses (else load order)
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
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from routescript.db import abandon_open_connections
from routescript.resolve import Resolver
from routescript.script.context import STARTUP_ROUTE, MsgContext
from routescript.sip import SocketInfo
from routescript.transaction import TransactionLayer
from routescript.transport import TransportLayer
from routescript.transport.keepalive import KeepAlive
from routescript.transport.ws import WsOptions

from .chroot import ChrootError, LateImportGuard, enter_chroot, inside, package_of, preload_imports
from .config import CoreConfig
from .dispatch import MessageDispatcher
from .events import EventBus
from .health import LoopLagMonitor
from .loading import ConfigLoader, Diagnostic, LoadError, config_diagnostic
from .log import NOTICE, LogSettings, setup_logging
from .module import ConfigError, Module, ModuleSet, RunsIn
from .pidfile import PidFile, PidFileError
from .privileges import PrivilegeError, RunAs, drop_privileges
from .resource_limits import set_resource_limits
from .sdnotify import NO_NOTIFIER, SystemdNotifier
from .routes import Routes
from .stats import CoreCounters
from .timers import Timers

if TYPE_CHECKING:
    import socket

    from routescript.db import Database

    from .relay import Relay
    from .requests import RequestSender

log = logging.getLogger("routescript.core")

STOP_GRACE = 5.0  # seconds in-flight messages get at shutdown: shutdown_timeout's default

# Which modules each kind of process starts (Module.runs_in); one process alone starts them all.
ALL_MODULES: frozenset[RunsIn] = frozenset({"workers", "supervisor", "both"})
WORKER_MODULES: frozenset[RunsIn] = frozenset({"workers", "both"})
SUPERVISOR_MODULES: frozenset[RunsIn] = frozenset({"supervisor", "both"})


# Once shutdown_timeout is spent, each step still to close gets this long (the SIP sockets, the databases:
# a database left open keeps its thread, and the interpreter waits for it at exit - a stop that hung).
AFTER_OVERRUN_STEP = 0.5


class CloseStack:
    """How to close what start() opened, in the order it was opened. close_all() closes the last
    opened first; a step that fails is logged and the others still run."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    def push(self, what: str, close: Callable[[], Awaitable[object]]) -> None:
        self._steps.append((what, close))

    async def close_all(self, limit: float | None = None) -> list[str]:
        """Close every step; with `limit` (seconds) a step still running when the limit is spent is
        abandoned (cancelled) and logged, and each later step still gets AFTER_OVERRUN_STEP seconds:
        one stuck module must not leave the sockets and databases open. Returns what was abandoned.
        Bound: limit + AFTER_OVERRUN_STEP per step left, for steps that let themselves be cancelled."""
        loop = asyncio.get_running_loop()
        end = None if limit is None else loop.time() + limit
        abandoned: list[str] = []
        while self._steps:
            what, close = self._steps.pop()
            if end is None:
                try:
                    await close()
                except Exception:
                    log.exception("closing %s failed", what)
                continue
            left = max(end - loop.time(), AFTER_OVERRUN_STEP)
            # a task of its own: a close that ignores its cancellation cannot hold the stop
            step = asyncio.ensure_future(close())
            done, _ = await asyncio.wait({step}, timeout=left)
            if not done:
                step.cancel()
                step.add_done_callback(_retrieve)
                abandoned.append(what)
                log.error("stopping: closing %s took more than %.1f s: abandoned", what, left)
            elif not step.cancelled() and (exc := step.exception()) is not None:
                log.error("closing %s failed", what, exc_info=exc)
        return abandoned


def _retrieve(task: asyncio.Future[object]) -> None:
    """An abandoned close that ends later: its outcome is read (no 'exception never retrieved')."""
    if not task.cancelled():
        task.exception()


class Databases:
    """The routescript.db handles modules share: one per URL, opened on first use, closed at stop."""

    def __init__(self) -> None:
        self._open: dict[str, Database] = {}

    async def get(self, url: str) -> Database:
        """A routescript.db handle for `url`, opened once and shared; closed at stop()."""
        if url not in self._open:
            from routescript.db import open_database
            self._open[url] = await open_database(url)
        return self._open[url]

    async def close_all(self) -> None:
        for db in self._open.values():
            try:
                await db.close()
            except Exception:
                log.exception("closing database failed")
        self._open.clear()


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


# What makes the server's transport: CountingTransportLayer's signature (counters, on_message, **bounds).
TransportFactory = Callable[..., TransportLayer]


def _async(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """A synchronous close for the CloseStack."""
    async def run() -> None:
        close()
    return run


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
        self._identity: tuple[RunAs | None] | None = None   # user/group, resolved once (identity())
        self.chrooted = False                             # confine() entered the `chroot` directory

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        """Bind the SIP sockets, drop privileges (user/group), make the transaction layer, start the
        modules, run startup_route and the timers, and only then read the SIP sockets.

        Every step that opens something registers how to close it (self._closing); when a later step
        fails, everything opened so far is closed, last first, before the error goes up - a failed
        start leaves no socket, database connection or thread behind, so `routescript run` exits."""
        self.start_logging()
        await self._start(self.bind_sockets, privileges=True, runs_in=ALL_MODULES)
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
            return await self.bind_sockets(closing, make_transport)

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
                self.confine()
                pid_file = self.write_pid_file()
                if pid_file is not None:
                    closing.push("the pid file", _async(pid_file.remove))
                target = self.drop_privileges()
            self.make_transactions(closing, transport)
            closing.push("the events", self._server.events.drain)
            await self.start_modules(closing, target, runs_in)
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
            transport = await self.adopt_sockets(closing, sockets,
                                                 conn_id_base=node.conn_id_base if node is not None else 0)
            if node is not None:
                node.prepare()
                node.attach(transport)
                closing.push("the worker's inbox", _async(node.detach))
            self.make_transactions(closing, transport)
            closing.push("the events", self._server.events.drain)
            await self.start_modules(closing, self.identity(), WORKER_MODULES)
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
            await self.start_modules(closing, self.identity(), SUPERVISOR_MODULES)
            self._set_started(True)
        except BaseException:
            self._set_started(False)
            await closing.close_all()
            raise

    async def wait_stopped(self) -> None:
        """Return once stop() is done (MI `kill` stops a supervisor this way)."""
        await self._stopped.wait()

    def _make_transport(self, conn_id_base: int = 0, make: TransportFactory | None = None) -> TransportLayer:
        """The transport with the core parameters' bounds; its messages go straight to the dispatcher
        (a worker's: its connection ids above `conn_id_base`, global across workers). `make`: another
        CountingTransportLayer class (or a factory with its arguments), a simulated network's."""
        from .counting import CountingTransportLayer

        server = self._server
        cfg = server.config
        transport = (make or CountingTransportLayer)(
            server.counters, self._dispatcher.on_message,
            tcp_idle_timeout=float(cfg.get("tcp_connection_lifetime")),
            max_tcp_connections=int(cfg.get("tcp_max_connections")),
            max_tcp_connections_per_ip=int(cfg.get("tcp_max_connections_per_ip")),
            tcp_trusted_sources=cfg.tcp_trusted_sources,
            tcp_max_msg_time=float(cfg.get("tcp_max_msg_time")),
            tcp_connect_timeout=cfg.tcp_connect_timeout,
            udp_buffer=int(cfg.get("maxbuffer")), conn_id_base=conn_id_base, tls=self._tls_provider())
        if cfg.get("tcp_keepalive"):
            transport.tcp_keepalive = KeepAlive(cfg.get("tcp_keepidle"), cfg.get("tcp_keepinterval"),
                                                cfg.get("tcp_keepcount"))
        proto_ws = server.modules.get("proto_ws")
        # proto_ws and proto_wss are found by name, as tm: the core does not import modules/
        if proto_ws is not None and hasattr(proto_ws, "ws_options"):
            transport.ws_options = WsOptions(**proto_ws.ws_options())
        proto_wss = server.modules.get("proto_wss")
        if proto_wss is not None and hasattr(proto_wss, "wss_options") and \
                hasattr(proto_wss, "tls_transport"):
            transport.wss_options = WsOptions(**proto_wss.wss_options())
            transport.wss_tls = proto_wss.tls_transport()
        server.transport = transport
        return transport

    def _tls_provider(self) -> Any:
        """proto_tls's TLS provider (tls_mgm's contexts) when it is loaded, else None (no TLS). Found by
        name: the core does not import modules/, so it asks for proto_tls's one hook."""
        proto_tls = self._server.modules.get("proto_tls")
        if proto_tls is not None and hasattr(proto_tls, "tls_transport"):
            return proto_tls.tls_transport()
        return None

    async def adopt_sockets(self, closing: CloseStack, sockets: Sequence[tuple[socket.socket, bool, str]], *,
                            conn_id_base: int = 0) -> TransportLayer:
        """A worker's transport on the sockets its supervisor bound (each with whether it reads it, and
        the transport it serves)."""
        transport = self._make_transport(conn_id_base)
        closing.push("the SIP sockets", transport.close)
        for sock, read, proto in sockets:
            self._server.sockets.append(await transport.adopt(sock, read=read, proto=proto))
        return transport

    async def bind_sockets(self, closing: CloseStack, make: TransportFactory | None = None) -> TransportLayer:
        """The transport (its messages go straight to the dispatcher) and every listen= socket."""
        server = self._server
        cfg = server.config
        transport = self._make_transport(make=make)
        closing.push("the SIP sockets", transport.close)
        for spec in cfg.listen_specs():
            try:
                info = await transport.bind(spec.proto, spec.host, spec.port)
            except OSError as exc:
                raise LoadError([Diagnostic(f"cannot listen on {spec.name}: {exc.strerror or exc}",
                                            spec.pos)]) from None
            server.sockets.append(info)
        return transport

    def identity(self) -> RunAs | None:
        """Whom the server runs as (user/group), looked up once: before the chroot, whose new root
        need not hold /etc/passwd and /etc/group. PrivilegeError for an unknown name."""
        if self._identity is None:
            self._identity = (self._server.config.run_as(),)
        return self._identity[0]

    def confine(self, sockets: Sequence[SocketInfo] | None = None) -> None:
        """`chroot` (chroot.py says why here): the identity to switch to is looked up, the modules read
        what they would read later (Module.before_chroot, for `sockets`: the workers' when they adopt
        them, else this process's), everything the server may import later is imported, systemd's
        socket connected, then the chroot (and chdir /), and LateImportGuard reports any import still
        made. From here the script file a reload reads is the one inside the new root. A LoadError when
        the chroot cannot be made (not root: EPERM)."""
        config = self._server.config
        try:
            self.identity()
        except PrivilegeError as exc:
            raise LoadError([Diagnostic(str(exc), _identity_pos(config))]) from None
        jail = str(config.get("chroot") or "")
        if not jail:
            return
        modules = self._server.modules.instances.values()
        for module in modules:   # what they would read later (tls_mgm: the certificates)
            module.before_chroot(self._server.sockets if sockets is None else sockets)
        packages = {package_of(type(mod).__module__) for mod in modules}
        preloaded = preload_imports(["routescript", *sorted(packages)])
        self.notifier.connect()   # its socket's path is outside the new root
        script = inside(jail, self._loader.path)
        try:
            enter_chroot(jail)
        except ChrootError as exc:
            raise LoadError([Diagnostic(str(exc), config.positions.get("chroot"))]) from None
        LateImportGuard(jail, preloaded.absent).install()
        self.chrooted = True
        self._loader.path = script
        log.info("chroot %s: %d modules imported before it (%.2f s); the paths opened from now on are "
                 "inside it", jail, preloaded.modules, preloaded.seconds)
        if not os.path.isfile(script):
            log.warning("reload_routes (SIGHUP) reads the script at %s inside the chroot %s: no such file "
                        "there, so a reload is refused until it is (docs/operations.md, chroot)",
                        script, jail)

    def write_pid_file(self) -> PidFile | None:
        """pid_file (-P): this process's id, written before the privilege drop (/run is root's); None
        when not asked for. A LoadError when another live process holds it or it cannot be written."""
        path = str(self._server.config.get("pid_file") or "")
        if not path:
            return None
        pid_file = PidFile(path)
        try:
            pid_file.write()
        except PidFileError as exc:
            raise LoadError([Diagnostic(str(exc), self._server.config.positions.get("pid_file"))]) from None
        return pid_file

    def drop_privileges(self) -> RunAs | None:
        """The process limits (open_files_limit, disable_core_dump: raising a hard limit needs root),
        wdir, then user/group: switch once the SIP sockets are bound (ports below 1024 need root),
        before the modules open their files (privileges.py says why)."""
        config = self._server.config
        try:
            for line in set_resource_limits(config):
                log.info("%s", line)
        except ConfigError as exc:
            raise LoadError([config_diagnostic(exc)]) from None
        if wdir := config.get("wdir"):
            os.chdir(wdir)   # OpenSIPS: chdir(working_dir) (inside the chroot), then do_suid
        try:
            target = self.identity()
            if target is not None:
                # in a chroot the Python installation is not there to read: every import was made before
                drop_privileges(target, check_code=not self.chrooted)
        except PrivilegeError as exc:
            raise LoadError([Diagnostic(str(exc), _identity_pos(config))]) from None
        return target

    def make_transactions(self, closing: CloseStack, transport: TransportLayer) -> TransactionLayer:
        """The transaction layer, with tm's timers when tm is loaded (its fr_timeout is Timer F of our
        client transactions, the NOTIFYs, as in OpenSIPS)."""
        from .counting import CountingTransactionLayer
        from .relay import Relay
        from .requests import RequestSender

        server = self._server
        transactions = CountingTransactionLayer(server.counters, transport, **self._transaction_options())
        server.transactions = transactions
        # The services built on the transaction layer are made with it: server.requests ("send this
        # request inside this dialog / to this destination", requests.py).
        config = server.config
        server.requests = RequestSender(
            transactions, server.sockets,
            user_agent=config.user_agent_header if config.get("server_signature") else "")
        # relay: tm's t_relay and forward(); the resolver is chosen here, in one place
        server.relay = Relay(transactions, transport, server.sockets, make_resolver(server.config))
        closing.push("the transactions", transactions.close)
        return transactions

    def _transaction_options(self) -> dict[str, float]:
        tm = self._server.modules.get("tm")
        # tm is found by name: the core does not import modules/, so it asks for tm's one hook
        if tm is not None and hasattr(tm, "transaction_options"):
            return dict(tm.transaction_options())
        return {}

    async def start_modules(self, closing: CloseStack, target: RunAs | None,
                            runs_in: frozenset[RunsIn] = ALL_MODULES) -> None:
        """Every module's start() whose Module.runs_in is in `runs_in`, each after the modules it needs
        (ModuleSet.start_order: load order otherwise); one that fails refuses the start. Each one's stop()
        goes on the CloseStack, so they stop in the reverse order."""
        loaded = self._loader.loaded
        assert loaded is not None
        modules = self._server.modules
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


def log_left_running() -> None:
    """After an abandoned close: the tasks still pending and the threads still alive (a non-daemon one
    keeps the interpreter from exiting), so that a stop that does not end says what it waits for."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if tasks:
        names = sorted(f"{t.get_name()} ({getattr(t.get_coro(), '__qualname__', '?')})" for t in tasks)
        log.warning("stopping: %d tasks still pending: %s%s", len(tasks), "; ".join(names[:10]),
                    f" ... ({len(names) - 10} more)" if len(names) > 10 else "")
    threads = [t.name for t in threading.enumerate()
               if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if threads:
        log.warning("stopping: threads still running: %s", ", ".join(sorted(threads)))


def _already_stopping(sig: int) -> None:
    log.warning("%s while stopping: ignored, the stop goes on (bounded by shutdown_timeout)",
                signal.Signals(sig).name)


async def reload_telling(notifier: SystemdNotifier,
                         reload: Coroutine[object, object, Sequence[object]]) -> Sequence[object]:
    """A SIGHUP reload between RELOADING=1 and READY=1 (systemd's reload protocol); a refused reload
    (the old script kept) is said in STATUS=."""
    notifier.reloading()
    diagnostics: Sequence[object] = ()
    try:
        diagnostics = await reload
    finally:
        errors = [d for d in diagnostics if getattr(d, "severity", "error") == "error"]
        notifier.ready(f"reload refused, the old script runs: {errors[0]}" if errors else "reloaded")
    return diagnostics


def _identity_pos(config: CoreConfig) -> Any:
    return next((config.positions[n] for n in ("user", "uid", "group", "gid") if n in config.positions), None)


def _starts_here(module: Module, runs_in: frozenset[RunsIn]) -> bool:
    return module.runs_in in runs_in


def make_resolver(config: CoreConfig) -> Resolver:
    """The next-hop resolver every sender uses, one per process: the one place it is chosen. RFC 3263
    over DNS with /etc/hosts and a TTL cache (routescript/resolve, docs/dns.md), from the core DNS
    parameters; IP literals never wait for it."""
    from routescript.resolve.resolver import DnsResolver

    return DnsResolver(config.dns_settings())
