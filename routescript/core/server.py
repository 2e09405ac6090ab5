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

This file assembles Server from its parts (loading.py, lifecycle.py, dispatch.py, replies.py) and keeps
the transport's per-message callback, is_myself and run_file.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from routescript.script.context import ONREPLY_ROUTE

from ._server_base import ServerBase
from .config import CoreConfig
from .dispatch import DispatchMixin, _acks_our_stateless_reply, _has_pos, _where
from .events import EventBus
from .lifecycle import STOP_GRACE, LifecycleMixin
from .loading import (Diagnostic, LoadError, Loaded, LoadingMixin, PlainDiagnostic, _source_line,
                      config_diagnostic)
from .module import ModuleSet
from .replies import _FROM_TAG, ReplyMixin, _from_tag, _is_error_reply, _with_reply_headers
from .stats import KNOWN_METHODS, CoreCounters, Statistics, register_core_statistics

__all__ = [
    "Server", "LoadError", "run_file", "install_event_loop_policy",
    "Diagnostic", "PlainDiagnostic", "config_diagnostic", "Loaded", "_source_line",
    "MAX_RUNNING", "MAX_PENDING", "STOP_GRACE",
    "_FROM_TAG", "_from_tag", "_is_error_reply", "_with_reply_headers",
    "_acks_our_stateless_reply", "_has_pos", "_where",
]

log = logging.getLogger("routescript.core")


# Bounds (STYLE 7). Messages handled at once; beyond MAX_PENDING queued tasks a request gets 503.
MAX_RUNNING = 256
MAX_PENDING = 4096


class Server(LoadingMixin, LifecycleMixin, DispatchMixin, ReplyMixin, ServerBase):
    """One configuration, running on one asyncio event loop. Its parts: loading.py (load, reload_routes),
    lifecycle.py (start, stop, serve_forever, timers), dispatch.py (handle_message, routes),
    replies.py (make_reply, reply, send_reply); the transport's callback and is_myself are here."""

    def __init__(self) -> None:
        self.path: str = ""
        self.config = CoreConfig()
        self.modules = ModuleSet()
        self.registry: Any = None
        self.script: Any = None  # the compiled script messages run with; swapped whole by reload
        self.loaded: Loaded | None = None
        self.events = EventBus(self._run_event_route, self, self._has_event_route)
        # Statistics exist before any module is made, so modules register theirs in __init__/check/start;
        # the core's per-message counters are plain int attributes of self.counters (stats.py).
        self.statistics = Statistics()
        self.counters = CoreCounters()
        register_core_statistics(self.statistics, self.counters, self)
        self.transport: Any = None
        self.transactions: Any = None
        self.requests = None    # routescript.core.requests.RequestSender, made by start()
        self.sockets: list[Any] = []
        self._databases: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = asyncio.Semaphore(MAX_RUNNING)
        self._stopped = asyncio.Event()
        self._started = False
        self._closing = None
        self._reload_lock = asyncio.Lock()
        self._timer_names: set[str] = set()
        self.queue_delay_limit = 0.0       # seconds; start() sets it from the core parameter (ms)
        self._shed_logged = -1.0e9
        self._stop_logged = -1.0e9

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
            self._while_stopping(msg, source)
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
        arrived = time.monotonic()
        if is_request and self.queue_delay_limit:
            in_kernel = self.transport.queue_delay(source, arrived)   # its wait in the kernel's buffer
            arrived -= in_kernel
            if in_kernel > self.queue_delay_limit and self._too_late(msg, source, arrived):
                return   # already too late: answered here, without a task
        self._spawn(self.handle_message(msg, source, arrived))

    def _while_stopping(self, msg: Any, source: Any) -> None:
        """A message read after stop() began (the sockets are read until the modules have stopped,
        seconds with presence's last flush). A response still completes its transaction (the 200 a
        NOTIFY sent before the stop waits for); a request is refused 503 + Retry-After (RFC 3261
        21.5.4: the client tries again, or another server) and counted, never dropped unanswered."""
        if not getattr(msg, "is_request", False):
            self.counters.rcv_replies += 1
            try:
                if self.transactions is None or not self.transactions.on_response(msg, source):
                    self.counters.drop_replies += 1
            except Exception:
                log.exception("unexpected failure handling a response")
            return
        self.counters.rcv_requests += 1
        self.counters.drop_requests += 1
        if msg.method != "ACK":
            now = time.monotonic()
            if now - self._stop_logged >= 1.0:  # one line a second, not one per request
                self._stop_logged = now
                log.info("stopping: 503 to %s %s (Call-ID %s) and to what follows", msg.method,
                         getattr(msg, "ruri", ""), msg.header("call-id"))
            self._reply_stateless(msg, source, 503, "Service Unavailable", (("Retry-After", "5"),))

    def _too_late(self, msg: Any, source: Any, arrived: float) -> bool:
        """Overload, measured where it shows: the time a request waited between its arrival and its
        turn (the kernel's UDP buffer, as the transport's probe measures it, then the loop's ready
        queue and the MAX_RUNNING bound). Beyond queue_delay_limit it gets a
        503 with Retry-After (RFC 3261 21.5.4) instead of the script: its client retransmits at 500 ms
        (T1), so a late answer is paid twice, and the server that answers every request late collapses
        to a fraction of its capacity (measured: 455 SUBSCRIBE calls/s achieved at 1,720 offered).
        A 503 costs a tenth of a request and keeps the rest on time. ACKs are never answered.

        Choice, measured on PUBLISH 50% above capacity: at 250 ms the server kept ~1,550 successful
        calls/s and no retransmission; at 400 ms (too close to T1) it fell to ~830 with retransmissions,
        and refusing only a standing queue (CoDel-like: every request of 200 ms late) to ~870. The cost:
        a server run at 90%+ of its capacity answers the worst of its bursts 503 (0.5% of calls once).

        A request inside a dialog (To tag: an unSUBSCRIBE, a refresh) may wait IN_DIALOG_ALLOWANCE times
        longer: new work is refused first, and the work already done for the dialog is not wasted."""
        limit = self.queue_delay_limit
        if not limit or not msg.is_request or msg.method == "ACK":
            return False
        now = time.monotonic()
        waited = now - arrived
        if waited <= limit or (waited <= limit * IN_DIALOG_ALLOWANCE and _in_dialog(msg)):
            return False
        self.counters.drop_requests += 1
        if now - self._shed_logged >= 1.0:  # one line a second, not one per request
            self._shed_logged = now
            log.warning("overloaded: a %s waited %.0f ms (queue_delay_limit %.0f ms): 503 until it "
                        "catches up", msg.method, waited * 1000, limit * 1000)
        self._reply_stateless(msg, source, 503, "Service Unavailable", (("Retry-After", "5"),))
        return True

    # ------------------------------------------------------------------ identity
    def is_myself(self, host: str, port: int | None = None) -> bool:
        """True when host[:port] names one of our sockets or an alias= (OpenSIPS's check_self)."""
        from routescript.sip.hosts import normalize_host

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

# queue_delay_limit times this for requests inside a dialog (375 ms by default: below T1, 500 ms).
# Measured on SUBSCRIBE calls offered 45% above capacity (2,200/s): 1,170-1,250 complete calls/s kept,
# against 1,030 when an unSUBSCRIBE was refused like a new SUBSCRIBE (half-done calls wasted).
IN_DIALOG_ALLOWANCE = 1.5


def _in_dialog(msg: Any) -> bool:
    """A To tag: the request belongs to a dialog (RFC 3261 12.2). Read only for a request about to be
    refused, so the cost does not matter; a broken To counts as outside."""
    try:
        return bool(msg.to.tag)
    except Exception:  # noqa: BLE001 - a broken To header: treated as new work
        return False


def tune_collector() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


async def run_file(path: str, *, user: str | None = None, group: str | None = None) -> int:
    """`routescript run`: load, start, serve until a stop signal. Returns the exit status: 1 when the
    configuration cannot be loaded or start-up fails (everything start() opened is closed by then, so
    the process ends at once). `user`/`group` (-u/-g) take the place of the script's own."""
    server = Server()
    try:
        server.load(path)
        _override_identity(server, user, group)
        # What loading made (the grammar, the compiled script, modules) lives as long as the process:
        # out of the collector's sight, a full collection - a pause of every message - only walks what
        # the traffic made. Only here, not in Server.load(): tests load many servers in one process.
        # Before start(), so that no signal can arrive between "listening" and serve_forever()'s
        # signal handlers while a collection runs.
        gc.collect()
        gc.freeze()
        tune_collector()
        await server.start()
    except LoadError as exc:
        for d in exc.diagnostics:
            log.error("%s", d)
        return 1
    except Exception:  # our bug: start() closed what it opened; say so and exit
        log.exception("start-up failed")
        return 1
    await server.serve_forever()
    return 0


def _override_identity(server: Server, user: str | None, group: str | None) -> None:
    """-u/-g: checked like the script's user/group (an unknown name is an error before anything opens).
    Choice: the command line wins over the script (OpenSIPS parses -u first and lets a `user =` line
    override it; an operator's command line is the later, more specific word)."""
    from .privileges import PrivilegeError, run_as

    for name, value in (("user", user), ("group", group)):
        if value is None:
            continue
        try:
            run_as(value, "") if name == "user" else run_as("", value)
        except PrivilegeError as exc:
            raise LoadError([PlainDiagnostic(f"-{name[0]} {value}: {exc}")]) from None
        server.config.values[name] = value
        server.config.values.pop("uid" if name == "user" else "gid", None)
        server.config.positions.pop(name, None)
