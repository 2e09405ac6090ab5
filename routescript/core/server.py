"""The running server: load a configuration, open the sockets, run the routes for every message.

    server = Server()
    server.load("examples/hello.cfg")      # parse, loadmodule, modparam, check(), compile
    await server.start()                   # sockets, transactions, modules' start(), startup_route, timers
    ...                                    # messages -> main route
    await server.stop()

What modules reach through `self.server` (their Module instance holds it):
  server.transactions   the TransactionLayer (create/reply server transactions, `await request(...)`)
  server.transport      the TransportLayer (sockets; send)
  server.events         the EventBus (`await raise_event("E_...", {...})`, subscribe)
  server.modules        the other module instances (`server.modules.get("presence")`)
  server.config         the typed core parameters (CoreConfig)
  await server.database(url)   a shared routescript.db handle per URL, closed at stop
  server.send_reply(ctx, code, reason, ...)   a stateless reply carrying Server:, to-tag stable per request
  server.is_myself(host, port)                 the listening sockets and alias= names
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import re
import signal
from collections.abc import Callable, Iterable
from typing import Any

from routescript.script.context import (
    ERROR_ROUTE,
    EVENT_ROUTE,
    ONREPLY_ROUTE,
    REQUEST_ROUTE,
    STARTUP_ROUTE,
    TIMER_ROUTE,
    MsgContext,
)

from routescript.script.runtime import DROP_KEY

from . import _script
from .config import CoreConfig, apply_globals
from .events import EventBus
from .loader import apply_modparams, build_registry, instantiate, load_modules
from .log import NOTICE, current_call_id, setup_logging
from .module import ConfigError, ModuleSet
from .stats import (KNOWN_METHODS, CoreCounters, Statistics, register_core_statistics,
                    register_module_statistics)

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


def Diagnostic(message: str, pos: tuple[str, int, int] | None = None,  # noqa: N802 - makes a Diagnostic
               severity: str = "error") -> Any:
    """routescript.script's Diagnostic (file:line:col, the line, a caret) when the position is known."""
    if pos is None:
        return PlainDiagnostic(message, severity)
    from routescript.script.ast import Pos
    from routescript.script.diagnostics import Diagnostic as ScriptDiagnostic

    return ScriptDiagnostic(Pos(*pos), message, _source_line(pos) or "", severity)


class LoadError(Exception):
    """The configuration cannot be loaded; `diagnostics` lists every problem found."""

    def __init__(self, diagnostics: list[Any]) -> None:
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = diagnostics


def _source_line(pos: tuple[str, int, int] | None) -> str | None:
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


def config_diagnostic(exc: ConfigError, severity: str = "error") -> Any:
    return Diagnostic(exc.message, exc.pos, severity)


class Loaded:
    """Everything one load of a configuration produced (the parts reload keeps or replaces)."""

    def __init__(self, path: str, ast: Any, config: CoreConfig, compiled: Any, warnings: list[Any],
                 loadmodules: list[Any], modparams: list[Any], globals_: list[Any]) -> None:
        self.path = path
        self.ast = ast
        self.config = config
        self.compiled = compiled
        self.warnings = warnings
        self.loadmodules = loadmodules
        self.modparams = modparams
        self.globals = globals_

    def loadmodule_pos(self, name: str) -> tuple[str, int, int] | None:
        for lm in self.loadmodules:
            if lm.name == name:
                pos: tuple[str, int, int] = lm.pos
                return pos
        return None

    @property
    def route_count(self) -> int:
        return len(_script.routes_of(self.ast))


# Bounds (STYLE 7). Messages handled at once; beyond MAX_PENDING queued tasks a request gets 503.
MAX_RUNNING = 256
MAX_PENDING = 4096
STOP_GRACE = 5.0  # seconds in-flight messages get at shutdown


class Server:
    """One configuration, running on one asyncio event loop."""

    def __init__(self) -> None:
        self.path: str = ""
        self.config = CoreConfig()
        self.modules = ModuleSet()
        self.registry: Any = None
        self.script: Any = None  # the compiled script messages run with; swapped whole by reload
        self.loaded: Loaded | None = None
        self.events = EventBus(self._run_event_route, self)
        # Statistics exist before any module is made, so modules register theirs in __init__/check/start;
        # the core's per-message counters are plain int attributes of self.counters (stats.py).
        self.statistics = Statistics()
        self.counters = CoreCounters()
        register_core_statistics(self.statistics, self.counters, self)
        self.transport: Any = None
        self.transactions: Any = None
        self.sockets: list[Any] = []
        self._databases: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = asyncio.Semaphore(MAX_RUNNING)
        self._stopped = asyncio.Event()
        self._started = False
        self._reload_lock = asyncio.Lock()
        self._timer_names: set[str] = set()

    # ------------------------------------------------------------------ load
    def load(self, path: str) -> Loaded:
        """Parse, load modules, apply modparams, check, compile. Raises LoadError with every diagnostic."""
        from routescript.script import ScriptError, compile_script, parse_file

        self.path = path
        try:
            ast = parse_file(path)
        except ScriptError as exc:
            raise LoadError(list(exc.diagnostics)) from None
        except OSError as exc:
            raise LoadError([Diagnostic(f"cannot read {path}: {exc.strerror or exc}")]) from None
        warnings: list[Any] = list(getattr(ast, "warnings", ()) or ())
        globals_ = _script.globals_of(ast, path)
        lms = _script.loadmodules_of(ast, path)
        mps = _script.modparams_of(ast, path)
        try:
            config, texts = apply_globals(globals_)
            warnings += [Diagnostic(text, pos, "warning") for text, pos in texts]
            classes = load_modules(lms)
            values = apply_modparams(classes, mps)
            self.config = config
            modules = instantiate(classes, values, self)
        except ConfigError as exc:
            raise LoadError([config_diagnostic(exc)]) from None
        for ev in {e for m in modules.instances.values() for e in m.events}:
            self.events.declare(ev)
        registry = build_registry(modules)
        try:
            compiled = compile_script(ast, registry)
        except ScriptError as exc:
            raise LoadError(list(exc.diagnostics)) from None
        refused = self._refused_errors(ast, modules)
        if refused:
            raise LoadError(refused)
        warnings += self._unbuilt_warnings(ast, modules)
        self.modules, self.registry, self.script = modules, registry, compiled
        register_module_statistics(self.statistics, self.counters, self)  # sl:, tm: when loaded
        self.loaded = Loaded(path, ast, config, compiled, warnings, lms, mps, globals_)
        return self.loaded

    def _unbuilt_warnings(self, ast: Any, modules: ModuleSet) -> list[Any]:
        unbuilt: dict[str, str] = {}
        for m in modules.instances.values():
            unbuilt.update(getattr(m, "unbuilt", {}) or {})
        out = []
        for name, pos in _script.calls_of(ast, self.path):
            if name in unbuilt:
                out.append(Diagnostic(f"{name}(): {unbuilt[name]}", pos, "warning"))
        return out

    def _refused_errors(self, ast: Any, modules: ModuleSet) -> list[Any]:
        """An error at every call of a function a module refuses in its configuration (Module.refused)."""
        refused: dict[str, str] = {}
        for m in modules.instances.values():
            refused.update(getattr(m, "refused", {}) or {})
        return [Diagnostic(f"{name}(): {refused[name]}", pos)
                for name, pos in _script.calls_of(ast, self.path) if name in refused]

    # ------------------------------------------------------------------ reload
    async def reload_routes(self) -> list[Any]:
        """Compile the file again aside, with the same module instances, and swap it in when valid.

        Returns the diagnostics: errors (nothing swapped, the old script keeps running) and warnings
        (loadmodule/modparam/global changes are reported and ignored, as OpenSIPS's reload_routes does).
        Module state, subscriptions and sockets are untouched.
        """
        from routescript.script import ScriptError, compile_script, parse_file

        async with self._reload_lock:
            assert self.loaded is not None, "reload_routes before load"
            path = self.path
            try:
                ast = parse_file(path)
                compiled = compile_script(ast, self.registry)
            except ScriptError as exc:
                diags = list(exc.diagnostics)
                log.error("reload_routes: %s rejected, old script kept:\n%s", path,
                          "\n".join(str(d) for d in diags))
                return diags
            except OSError as exc:
                d = Diagnostic(f"cannot read {path}: {exc.strerror or exc}")
                log.error("reload_routes: %s", d)
                return [d]
            refused = self._refused_errors(ast, self.modules)
            if refused:
                log.error("reload_routes: %s rejected, old script kept:\n%s", path,
                          "\n".join(str(d) for d in refused))
                return refused
            warnings = self._reload_warnings(ast) + self._unbuilt_warnings(ast, self.modules)
            for w in warnings:
                log.warning("reload_routes: %s", w)
            # The swap: one attribute assignment between messages; a message already running keeps
            # the script it started with.
            self.script = compiled
            old = self.loaded
            self.loaded = Loaded(path, ast, old.config, compiled, warnings, old.loadmodules, old.modparams,
                                 old.globals)
            if self._started:
                self._start_timers()
            log.info("reload_routes: %s reloaded (%d routes)", path, self.loaded.route_count)
            return warnings

    def _reload_warnings(self, ast: Any) -> list[Any]:
        assert self.loaded is not None
        out = []
        old_lm = [lm.name for lm in self.loaded.loadmodules]
        for lm in _script.loadmodules_of(ast, self.path):
            if lm.name not in old_lm:
                out.append(Diagnostic(f"loadmodule \"{lm.path}\" ignored by reload_routes "
                                      "(restart to load it)", lm.pos, "warning"))
        old_mp = {(m.module, m.param, repr(m.value)) for m in self.loaded.modparams}
        for mp in _script.modparams_of(ast, self.path):
            if (mp.module, mp.param, repr(mp.value)) not in old_mp:
                out.append(Diagnostic(f"modparam(\"{mp.module}\", \"{mp.param}\") change ignored by "
                                      "reload_routes (restart to apply it)", mp.pos, "warning"))
        old_g = {(n, repr(v)) for n, v, _p in self.loaded.globals}
        for n, v, p in _script.globals_of(ast, self.path):
            if (n, repr(v)) not in old_g:
                out.append(Diagnostic(f"global parameter '{n}' change ignored by reload_routes", p,
                                      "warning"))
        return out

    # ------------------------------------------------------------------ start / stop
    async def start(self) -> None:
        """Open the sockets, make the transaction layer, start the modules, run startup_route and timers."""
        from .counting import CountingTransactionLayer, CountingTransportLayer

        assert self.loaded is not None, "start before load"
        cfg = self.config
        setup_logging(cfg.log_level, xlog_level=cfg.xlog_level, stderr=cfg.stderror_enabled,
                      syslog=bool(cfg.get("syslog_enabled")), facility=str(cfg.get("syslog_facility")))
        for w in self.loaded.warnings:
            log.warning("%s", w)
        for note in cfg.notes:
            log.info("%s", note)
        self.transport = CountingTransportLayer(self.counters, self._on_message,
                                        tcp_idle_timeout=float(cfg.get("tcp_connection_lifetime")),
                                        max_tcp_connections=int(cfg.get("tcp_max_connections")))
        for spec in cfg.listen_specs():
            try:
                info = await self.transport.listen(spec.proto, spec.host, spec.port)
            except OSError as exc:
                await self.transport.close()
                raise LoadError([Diagnostic(f"cannot listen on {spec.name}: {exc.strerror or exc}",
                                            spec.pos)]) from None
            self.sockets.append(info)
        self.transactions = CountingTransactionLayer(self.counters, self.transport,
                                                     **self._transaction_options())
        started: list[Any] = []
        for name, mod in self.modules.instances.items():
            try:
                await mod.start()
            except Exception as exc:
                # mod_init failed (e.g. the database is unreachable): stop what started, refuse to run
                for other in reversed(started):
                    try:
                        await other.stop()
                    except Exception:
                        log.exception("module %s failed to stop cleanly", other.name)
                await self.transport.close()
                pos = self.loaded.loadmodule_pos(name)
                msg = exc.message if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                raise LoadError([Diagnostic(f"module '{name}' failed to start: {msg}", pos)]) from exc
            started.append(mod)
            log.debug("module %s started", name)
        self._started = True
        if self._has_route(STARTUP_ROUTE, None):
            await self._run_route(STARTUP_ROUTE, None, MsgContext(server=self, route_type=STARTUP_ROUTE))
        self._start_timers()
        log.log(NOTICE, "routescript started: %s, listening on %s", self.path,
                ", ".join(s.name for s in self.sockets))

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
        for name, mod in reversed(list(self.modules.instances.items())):
            try:
                await mod.stop()
            except Exception:
                log.exception("module %s failed to stop cleanly", name)
        await self.events.drain()
        if self.transactions is not None and hasattr(self.transactions, "close"):
            res = self.transactions.close()
            if asyncio.iscoroutine(res):
                await res
        if self.transport is not None:
            await self.transport.close()
        for db in self._databases.values():
            try:
                await db.close()
            except Exception:
                log.exception("closing database failed")
        self._databases.clear()
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

    # ------------------------------------------------------------------ routes
    def _has_route(self, kind: str, name: str | None, script: Any = None) -> bool:
        return bool((script or self.script).has(kind, name))

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

    async def _run_route(self, kind: str, name: str | None, ctx: MsgContext, script: Any = None) -> int:
        script = script or self.script
        return int(await script.run(kind, name, ctx) or 0)

    async def _run_event_route(self, name: str, ctx: MsgContext) -> bool:
        if not self._has_route(EVENT_ROUTE, name):
            return False
        await self._run_route(EVENT_ROUTE, name, ctx)
        return True

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

    # ------------------------------------------------------------------ messages
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_message(self, msg: Any, source: Any) -> None:
        """The transport's callback. A response that matches one of our client transactions (the 200
        to a NOTIFY) is handed over here at once - it must never queue behind requests waiting for the
        database (nor cost a task). Anything else is one task, bounded by MAX_PENDING.

        Choice: a request is not run eagerly up to its first wait (it would save the task for those
        that never wait, ~5% of an OPTIONS): code below it, asyncpg's pool among others, needs
        asyncio.current_task() (asyncio.timeout), which only a real task gives on Python 3.11."""
        if not self._started:
            return
        counters = self.counters  # OpenSIPS core statistics (stats.py): plain int attributes
        is_request = getattr(msg, "is_request", False)
        if is_request:
            counters.rcv_requests += 1
            if msg.method not in KNOWN_METHODS:
                counters.unsupported_methods += 1
        else:
            counters.rcv_replies += 1
            if self.transactions is not None:
                try:
                    if self.transactions.on_response(msg, source):
                        return
                except Exception:
                    log.exception("unexpected failure handling a response")
                    return
                if not self._has_route(ONREPLY_ROUTE, None):
                    log.debug("response %s matched no transaction; dropped", getattr(msg, "status", "?"))
                    return
        if len(self._tasks) >= MAX_PENDING:
            if is_request:
                counters.drop_requests += 1  # dropped before the script, as OpenSIPS counts them
            else:
                counters.drop_replies += 1
            if is_request and getattr(msg, "method", "") != "ACK":
                log.warning("overloaded (%d messages pending): 503 to %s", len(self._tasks), msg.method)
                self._reply_stateless(msg, source, 503, "Service Unavailable", (("Retry-After", "5"),))
            else:
                log.warning("overloaded (%d messages pending): response dropped", len(self._tasks))
            return
        self._spawn(self.handle_message(msg, source))

    async def handle_message(self, msg: Any, source: Any) -> None:
        """Dispatch one parsed message (also the entry point tests use without sockets)."""
        from routescript.sip import ParseError

        try:
            cid = msg.call_id
        except ParseError:
            cid = None
        token = current_call_id.set(cid)
        try:
            async with self._running:
                if msg.is_request:
                    await self._handle_request(msg, source)
                else:
                    await self._handle_response(msg, source)
        except Exception:
            log.exception("unexpected failure handling a message")
        finally:
            current_call_id.reset(token)

    async def _handle_response(self, msg: Any, source: Any) -> None:
        if self.transactions is not None and self.transactions.on_response(msg, source):
            return
        if self._has_route(ONREPLY_ROUTE, None):
            ctx = MsgContext(msg=msg, source=source, server=self, route_type=ONREPLY_ROUTE,
                             reply_code=getattr(msg, "status", None))
            try:
                await self._run_route(ONREPLY_ROUTE, None, ctx)
            except Exception as exc:
                log.error("onreply_route failed%s", _where(exc), exc_info=not _has_pos(exc))
        else:
            log.debug("response %s matched no transaction; dropped", getattr(msg, "status", "?"))

    async def _handle_request(self, msg: Any, source: Any) -> None:
        from routescript.sip import ParseError

        script = self.script  # fixed for this message even if a reload swaps it meanwhile
        ctx = MsgContext(msg=msg, source=source, server=self, route_type=REQUEST_ROUTE)
        try:
            if self.transactions is not None and self.transactions.lookup(msg, source) is not None:
                return  # a retransmission: the transaction layer has resent the last reply itself
        except ParseError as exc:  # a Via too broken to match transactions on
            await self._on_bad_message(ctx, exc, script)
            return
        if msg.method == "ACK" and _acks_our_stateless_reply(msg):
            self.counters.received_ACKs += 1  # sl's statistic; the script still sees the ACK
        # The compiled route never raises: what a function call, pseudo-variable or statement raised is
        # logged there with its file:line:col and recorded on the context (ctx.failure) for us.
        await self._run_route(REQUEST_ROUTE, None, ctx, script)
        if ctx.replied or msg.method == "ACK" or ctx.extra.get(DROP_KEY):
            return
        failure = ctx.failure
        if failure is None:
            return
        if isinstance(failure, ParseError):
            # the script met a bad header and ended without replying: its status + reason, or error_route
            await self._on_bad_message(ctx, failure, script)
        elif not isinstance(failure, (ValueError, TypeError)):  # a bad script value is only logged
            try:
                self.reply(ctx, 500, "Server Internal Error")
            except Exception:
                log.exception("could not send 500")

    async def _on_bad_message(self, ctx: MsgContext, exc: Any, script: Any) -> None:
        """The script touched a header the peer got wrong: error_route when the script has one, else
        the error's own status and reason (400 by default), as OpenSIPS's core does."""
        log.warning("bad message: %s", exc.reason)
        if "URI" in str(getattr(exc, "reason", "")):
            self.counters.bad_URIs_rcvd += 1
        else:
            self.counters.bad_msg_hdr += 1
        has_error_route = self._has_route(ERROR_ROUTE, None, script)
        if has_error_route:
            ctx.route_type = ERROR_ROUTE
            ctx.error = exc
            try:
                await script.run(ERROR_ROUTE, None, ctx)
            except Exception as exc2:
                log.error("error_route failed%s: %s", _where(exc2), exc2, exc_info=not _has_pos(exc2))
            return
        if not ctx.replied and ctx.msg.method != "ACK":
            try:
                self.reply(ctx, exc.status, exc.reason)
            except Exception as exc2:  # noqa: BLE001 - the headers a reply copies are broken too
                log.warning("cannot answer the bad message (%s): %s", exc.reason, exc2)

    # ------------------------------------------------------------------ replies
    def make_reply(self, msg: Any, code: int, reason: str | None = None, *,
                   headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                   content_type: str | None = None) -> Any:
        """A reply to `msg` with our to-tag (stable per request, so a stateless retransmission gets the
        same reply) and `Server:` when server_header is set. A 18x/2xx reply carries the request's
        Record-Route lines, in order (RFC 3261 12.1.1; OpenSIPS copies them for 180..299 to any request)."""
        from routescript.sip import build_reply

        hdrs = list(headers)
        if 180 <= code < 300 and msg.has_header("Record-Route"):
            hdrs[:0] = [("Record-Route", v) for v in msg.header_all("Record-Route")]
        server_hdr = self.config.server_header if self.config.get("server_signature") else ""
        if server_hdr and not any(n.lower() == "server" for n, _ in hdrs):
            hdrs.append(("Server", server_hdr))
        return build_reply(msg, code, reason, to_tag=self.to_tag(msg), headers=tuple(hdrs), body=body,
                           content_type=content_type)

    @staticmethod
    def to_tag(msg: Any) -> str:
        """OpenSIPS's sl makes its to-tag from the request; so do we (Call-ID, From tag, top branch)."""
        try:
            text = f"{msg.call_id or ''}\x00{_from_tag(msg)}\x00{msg.via.branch or ''}"
        except Exception:  # noqa: BLE001 - the slow way: a broken header gives an empty part
            parts = []
            getters: tuple[Callable[[], Any], ...] = (lambda: msg.call_id, lambda: msg.from_.tag,
                                                      lambda: msg.via.branch)
            for get in getters:
                try:
                    parts.append(str(get() or ""))
                except Exception:  # noqa: BLE001 - a broken header gives an empty part: still a tag
                    parts.append("")
            text = "\x00".join(parts)
        return "rs." + hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    def reply(self, ctx: MsgContext, code: int, reason: str | None = None, **kw: Any) -> Any:
        """Reply to ctx.msg: through its server transaction when one exists (t_newtran), else stateless.
        Headers the script added with append_to_reply() (ctx.reply_headers) go in every reply."""
        resp = self.make_reply(ctx.msg, code, reason, **_with_reply_headers(ctx, kw))
        if ctx.transaction is not None:
            self.transactions.reply(ctx.transaction, resp)
        else:
            self.transport.send_reply(resp, ctx.source)
            self.counters.count_sl_reply(code, _is_error_reply(ctx))
        if code >= 200:
            ctx.replied = True
        return resp

    def send_reply(self, ctx: MsgContext, code: int, reason: str | None = None, **kw: Any) -> Any:
        """A stateless reply (sl_send_reply), even when a transaction exists."""
        resp = self.make_reply(ctx.msg, code, reason, **_with_reply_headers(ctx, kw))
        self.transport.send_reply(resp, ctx.source)
        self.counters.count_sl_reply(code, _is_error_reply(ctx))
        if code >= 200:
            ctx.replied = True
        return resp

    def _reply_stateless(self, msg: Any, source: Any, code: int, reason: str,
                         headers: Iterable[tuple[str, str]] = ()) -> None:
        try:
            self.transport.send_reply(self.make_reply(msg, code, reason, headers=headers), source)
        except Exception:
            log.exception("could not send %d", code)

    # ------------------------------------------------------------------ identity
    def is_myself(self, host: str, port: int | None = None) -> bool:
        """True when host[:port] names one of our sockets or an alias= (OpenSIPS's check_self)."""
        from routescript.transport.address import normalize_host

        h = normalize_host(host)
        for info in self.sockets:
            if normalize_host(info.host) == h and (port is None or port == info.port):
                return True
            if normalize_host(info.host) in ("0.0.0.0", "::") and port in (None, info.port) and h in (  # noqa: S104
                    "127.0.0.1", "::1", "localhost"):
                return True
        for alias in self.config.aliases:
            a_host, _, a_port = alias.rpartition(":") if alias.count(":") == 1 else (alias, "", "")
            if normalize_host(a_host or alias) == h and (port is None or not a_port or int(a_port) == port):
                return True
        advertised = self.config.get("advertised_address")
        return bool(advertised) and normalize_host(advertised) == h


# tag-param = "tag" EQUAL token (RFC 3261 20.20), among the From params: after the ">" of a name-addr,
# anywhere in an addr-spec (whose ";" params are header params).
_FROM_TAG = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^;,\s>]+)", re.IGNORECASE)


def _from_tag(msg: Any) -> str:
    """The From tag as `msg.from_.tag` gives it for a well-formed From, read without parsing the
    whole name-addr and its URI (a stateless reply only needs this; it was a twentieth of an OPTIONS).
    A From the full parser would refuse still gives a stable tag here - all a to-tag needs."""
    value = msg.header("from")
    if value is None:
        raise ValueError("no From")
    gt = value.rfind(">")
    m = _FROM_TAG.search(value, gt if gt >= 0 else 0)
    return m.group(1) if m is not None else ""


def _is_error_reply(ctx: MsgContext) -> bool:
    """sl's sent_err_replies: a reply sent for an error met while handling the message (what
    sl_reply_error answers: a failed core step's ctx.extra["sl_error"], or the peer's bad header)."""
    return "sl_error" in ctx.extra or ctx.failure is not None or ctx.error is not None


def _acks_our_stateless_reply(msg: Any) -> bool:
    """An ACK whose To tag is one our stateless replies carry (Server.to_tag's "rs." prefix)."""
    try:
        tag = msg.to.tag
    except Exception:  # noqa: BLE001 - a broken To header: not ours to count
        return False
    return bool(tag) and str(tag).startswith("rs.")


def _with_reply_headers(ctx: MsgContext, kw: dict[str, Any]) -> dict[str, Any]:
    if not ctx.reply_headers:
        return kw
    kw = dict(kw)
    kw["headers"] = tuple(kw.get("headers", ())) + tuple(ctx.reply_headers)
    return kw


def _has_pos(exc: BaseException) -> bool:
    return getattr(exc, "pos", None) is not None


def _where(exc: BaseException) -> str:
    pos = getattr(exc, "pos", None)
    if pos:
        try:
            return f" at {pos[0]}:{pos[1]}:{pos[2]}"
        except (TypeError, IndexError):
            return f" at {pos}"
    return ""


def install_event_loop_policy() -> None:
    """uvloop when installed (DESIGN: one event loop, uvloop when available)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def run_file(path: str) -> int:
    """`routescript run`: load, start, serve until a stop signal. Returns the exit status."""
    server = Server()
    try:
        server.load(path)
        # What loading made (the grammar, the compiled script, modules) lives as long as the process:
        # out of the collector's sight, a full collection - a pause of every message - only walks what
        # the traffic made. Only here, not in Server.load(): tests load many servers in one process.
        # Before start(), so that no signal can arrive between "listening" and serve_forever()'s
        # signal handlers while a collection runs.
        gc.collect()
        gc.freeze()
        await server.start()
    except LoadError as exc:
        for d in exc.diagnostics:
            log.error("%s", d)
        return 1
    await server.serve_forever()
    return 0
