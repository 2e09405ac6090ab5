"""The server's life: start (sockets, transactions, modules, startup_route), stop, serve_forever with
its signals, the shared database handles, and the timer_route loops."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from routescript.script.context import STARTUP_ROUTE, TIMER_ROUTE, MsgContext

from ._server_base import ServerBase
from .loading import Diagnostic, LoadError
from .log import NOTICE, setup_logging
from .module import ConfigError
from .privileges import PrivilegeError, RunAs, drop_privileges

log = logging.getLogger("routescript.core")

STOP_GRACE = 5.0  # seconds in-flight messages get at shutdown


class CloseStack:
    """How to close what start() opened, in the order it was opened. close_all() closes the last
    opened first; a step that fails is logged and the others still run."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    def push(self, what: str, close: Callable[[], Awaitable[Any]]) -> None:
        self._steps.append((what, close))

    async def close_all(self) -> None:
        while self._steps:
            what, close = self._steps.pop()
            try:
                await close()
            except Exception:
                log.exception("closing %s failed", what)


class LifecycleMixin(ServerBase):
    """Server.start, stop, serve_forever, database and the timers."""

    # ------------------------------------------------------------------ start / stop
    async def start(self) -> None:
        """Bind the SIP sockets, drop privileges (user/group), make the transaction layer, start the
        modules, run startup_route and the timers, and only then read the SIP sockets.

        Every step that opens something registers how to close it (self._closing); when a later step
        fails, everything opened so far is closed, last first, before the error goes up - a failed
        start leaves no socket, database connection or thread behind, so `routescript run` exits."""
        assert self.loaded is not None, "start before load"
        cfg = self.config
        setup_logging(cfg.log_level, xlog_level=cfg.xlog_level, stderr=cfg.stderror_enabled,
                      syslog=bool(cfg.get("syslog_enabled")), facility=str(cfg.get("syslog_facility")))
        for w in self.loaded.warnings:
            log.warning("%s", w)
        for note in cfg.notes:
            log.info("%s", note)
        self._closing = closing = CloseStack()
        try:
            await self._start_steps(closing)
        except BaseException:
            self._started = False
            await closing.close_all()
            raise
        log.log(NOTICE, "routescript started: %s, listening on %s", self.path,
                ", ".join(s.name for s in self.sockets))

    async def _start_steps(self, closing: CloseStack) -> None:
        from .counting import CountingTransactionLayer, CountingTransportLayer
        from .requests import RequestSender

        assert self.loaded is not None
        cfg = self.config
        # Shared database handles are opened by the modules (self.database) and used by their stop():
        # closed after every module, so registered first.
        closing.push("the databases", self._close_databases)
        self.transport = CountingTransportLayer(self.counters, self._on_message,
                                        tcp_idle_timeout=float(cfg.get("tcp_connection_lifetime")),
                                        max_tcp_connections=int(cfg.get("tcp_max_connections")),
                                        max_tcp_connections_per_ip=int(cfg.get("tcp_max_connections_per_ip")),
                                        tcp_trusted_sources=cfg.tcp_trusted_sources,
                                        tcp_max_msg_time=float(cfg.get("tcp_max_msg_time")),
                                        udp_buffer=int(cfg.get("maxbuffer")))
        closing.push("the SIP sockets", self.transport.close)
        for spec in cfg.listen_specs():
            try:
                info = await self.transport.bind(spec.proto, spec.host, spec.port)
            except OSError as exc:
                raise LoadError([Diagnostic(f"cannot listen on {spec.name}: {exc.strerror or exc}",
                                            spec.pos)]) from None
            self.sockets.append(info)
        if wdir := self.config.get("wdir"):
            os.chdir(wdir)   # OpenSIPS: chdir(working_dir), then do_suid
        target = self._drop_privileges()
        self.transactions = CountingTransactionLayer(self.counters, self.transport,
                                                     **self._transaction_options())
        self.requests = RequestSender(self.transactions, self.sockets)
        closing.push("the transactions", self._close_transactions)
        closing.push("the events", self.events.drain)
        for name, mod in self.modules.instances.items():
            # stop() undoes whatever part of start() ran, so it is registered before start() runs
            # (OpenSIPS calls every module's destroy at clean-up, whether its init succeeded or not).
            closing.push(f"module {name}", mod.stop)
            try:
                await mod.start()
            except Exception as exc:
                # mod_init failed (e.g. the database is unreachable): refuse to run
                pos = self.loaded.loadmodule_pos(name)
                msg = exc.message if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                if target is not None:
                    msg += (f" (the server runs as {target.describe()} from the moment its SIP sockets "
                            "are bound: that account must be able to open what this module uses)")
                raise LoadError([Diagnostic(f"module '{name}' failed to start: {msg}", pos)]) from exc
            log.debug("module %s started", name)
        self._started = True
        if self._has_route(STARTUP_ROUTE, None):
            await self._run_route(STARTUP_ROUTE, None, MsgContext(server=self, route_type=STARTUP_ROUTE))
        self._start_timers()
        # Only now read the SIP sockets: what arrived during start-up waited in the kernel and is served
        # now, its wait not counted against queue_delay_limit (it was not overload). The probes start
        # with the reading, so the first ones do not age behind a long start-up either.
        self.queue_delay_limit = max(0, int(cfg.get("queue_delay_limit"))) / 1000.0
        await self.transport.start_serving()
        if self.queue_delay_limit:
            # the limit counts the time requests wait in the kernel's UDP buffers too
            self.transport.start_queue_probes()

    def _drop_privileges(self) -> RunAs | None:
        """user/group: switch once the SIP sockets are bound (ports below 1024 need root), before the
        modules open their files (privileges.py says why)."""
        try:
            target = self.config.run_as()
            if target is not None:
                drop_privileges(target)
        except PrivilegeError as exc:
            pos = next((self.config.positions[n] for n in ("user", "uid", "group", "gid")
                        if n in self.config.positions), None)
            raise LoadError([Diagnostic(str(exc), pos)]) from None
        return target

    async def _close_transactions(self) -> None:
        if self.transactions is not None and hasattr(self.transactions, "close"):
            res = self.transactions.close()
            if asyncio.iscoroutine(res):
                await res

    async def _close_databases(self) -> None:
        for db in self._databases.values():
            try:
                await db.close()
            except Exception:
                log.exception("closing database failed")
        self._databases.clear()

    def _transaction_options(self) -> dict[str, Any]:
        """tm's fr_timeout (seconds) is Timer F of our client transactions (NOTIFY), as in OpenSIPS."""
        tm = self.modules.get("tm")
        opts: dict[str, Any] = {}
        if tm is not None and hasattr(tm, "transaction_options"):
            opts.update(tm.transaction_options())
        return opts

    async def stop(self) -> None:
        """Stop receiving, let in-flight messages finish (bounded), stop the modules, close everything."""
        if not self._started:
            self._stopped.set()
            return
        self._started = False
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current]
        timers = [t for t in pending if getattr(t, "_rs_timer", False)]
        for t in timers:
            t.cancel()
        if pending:
            _done, still = await asyncio.wait(pending, timeout=STOP_GRACE)
            for t in still:
                t.cancel()
        await self._closing.close_all()
        self._stopped.set()
        log.log(NOTICE, "routescript stopped")

    async def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM (or stop()); SIGHUP reloads the routes."""
        loop = asyncio.get_running_loop()
        stop_req = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_req.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload_routes()))
        try:
            waiter = asyncio.ensure_future(stop_req.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            await asyncio.wait([waiter, stopped], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopped.cancel()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()

    async def database(self, url: str) -> Any:
        """A routescript.db handle for `url`, opened once and shared; closed at stop()."""
        if url not in self._databases:
            from routescript.db import open_database
            self._databases[url] = await open_database(url)
        return self._databases[url]

    # ------------------------------------------------------------------ timers
    def _timer_routes(self) -> list[tuple[str, float]]:
        """(name, interval seconds) of the current script's timer_route[name, interval] blocks, read from
        CompiledScript.timer_routes [(name, interval, fn)]."""
        return [(str(name), float(interval)) for name, interval, _fn in self.script.timer_routes]

    def _start_timers(self) -> None:
        """One loop per timer_route name not yet running (at start, and after a reload adds one)."""
        for name, _interval in self._timer_routes():
            if name not in self._timer_names:
                self._timer_names.add(name)
                self._spawn(self._timer_loop(name))

    async def _timer_loop(self, name: str) -> None:
        """Run timer_route[name] every interval seconds. The interval and the route are read from the
        current script at each tick, so a reload that changes them applies at the next tick, and one
        that removes the route ends the loop."""
        asyncio.current_task()._rs_timer = True  # type: ignore[union-attr]
        try:
            while self._started:
                interval = dict(self._timer_routes()).get(name)
                if interval is None:
                    log.info("timer_route[%s] is gone after reload_routes; its timer stops", name)
                    return
                await asyncio.sleep(max(interval, 0.001))
                if not self._started:
                    return
                await self._run_route(TIMER_ROUTE, name, MsgContext(server=self, route_type=TIMER_ROUTE))
        finally:
            self._timer_names.discard(name)
