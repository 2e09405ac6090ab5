"""`routescript run` with worker processes: the supervisor ("attendant" in MI ps), docs/workers.md
section 1.

Start order (OpenSIPS main.c's: listeners, chroot, do_suid, children): the configuration is loaded and
checked by the caller; the supervisor binds every SIP socket (WorkerSockets), enters the chroot (a
restarted worker is forked inside it too), drops privileges, forks worker 0 and waits for its Ready (it
runs startup_route, once), then forks the others together and waits for all. A StartFailed (or a worker
that exits before Ready) stops the others and `routescript run` exits 1 with the worker's error. Then
the modules that run in the supervisor start (the MI listeners) and it serves:

- a worker that exits is reaped (pidfd readable, os.waitpid) and forked again in the same slot with
  epoch + 1 after the RestartPolicy's back-off; one that answers no Ping for WATCHDOG seconds is killed
  (then it is a crash like any other);
- SIGTERM/SIGINT (or MI kill): Stop to every worker, SIGKILL to those still there after stop_timeout()
  (a worker's own bound, 2 x shutdown_timeout, and STOP_MARGIN);
- SIGHUP or MI reload_routes: the all-or-none reload (docs/workers.md, section 6): the supervisor
  compiles the script itself, every worker prepares it aside (ReloadPrepare/Prepared), then all commit or
  all abort;
- MI: each command runs where its declaration says (MICommand.workers): here, in worker 0, in every
  worker (errors collected) or in every worker with the lists joined; get_statistics merges every
  worker's statistics (routescript.mi.aggregate). A worker that does not answer is an MI error naming it,
  never a partial answer.

The supervisor opens no database and starts no thread: a fork is only safe in a single-threaded process
(checked before each fork).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from routescript.core.loading import LoadError
from routescript.core.log import NOTICE

from .child import after_fork, run_worker, set_process_name
from .control import (
    Adopt,
    Adopted,
    ControlChannel,
    ControlError,
    Load,
    MIReply,
    MIRequest,
    Ping,
    Pong,
    Prepared,
    Ready,
    ReloadAbort,
    ReloadCommit,
    ReloadPrepare,
    SlotTableUpdate,
    StartFailed,
    StatsReply,
    StatsRequest,
    Stop,
)
from .dispatch import SlotTable
from .inbox import Inbox, InboxError
from .interest import SharedInterest
from .messages import Resync
from .plan import WorkerPlan, runs_workers
from .restart import RestartPolicy
from .sockets import WorkerSockets

if TYPE_CHECKING:
    from routescript.core.loading import LoadDiagnostic
    from routescript.core.overrides import RunOptions
    from routescript.core.pidfile import PidFile
    from routescript.core.module import MICommand
    from routescript.core.server import Server
    from routescript.core.stats import Statistics
    from routescript.mi.aggregate import WorkerError

    from .node import WorkerNode

log = logging.getLogger("routescript.workers")
T = TypeVar("T")

START_TIMEOUT = 120.0    # seconds a worker may take to start (schema creation, startup_route)
STOP_MARGIN = 5.0        # seconds beyond a worker's own stop bound (2 x shutdown_timeout) before SIGKILL
PING_INTERVAL = 2.0
WATCHDOG = 10.0          # seconds without a Pong before a worker is killed
MI_TIMEOUT = 30.0        # seconds a forwarded MI command may take (a table walk is the longest)
MI_IN_FLIGHT = 64        # forwarded MI commands waiting per worker
STATS_TIMEOUT = 5.0      # seconds a worker may take to send its statistics
PREPARE_TIMEOUT = 10.0   # seconds every worker gets to compile a reloaded script aside
ADOPT_AFTER = 2.0        # seconds a slot may be down before a live worker adopts its state
ADOPT_TIMEOUT = 30.0     # seconds the restart of an adopted slot waits for Adopted at most


async def run(path: str, options: RunOptions | None = None) -> int:
    """`routescript run`: one process as before, or a supervisor and its workers when the configuration
    asks for more than one (plan.runs_workers). The main process alone speaks to systemd (sdnotify.py)."""
    from routescript.core.sdnotify import SystemdNotifier
    from routescript.core.server import freeze_loaded_objects, load_for_run, log_load_error, run_loaded

    notifier = SystemdNotifier.from_environment()   # read before any fork, and removed from the environment
    try:
        server = load_for_run(path, options)
    except LoadError as exc:
        log_load_error(exc)
        return 1
    server.lifecycle.notifier = notifier
    plan = server.config.worker_plan()
    if not runs_workers(plan):
        return await run_loaded(server)
    freeze_loaded_objects()
    return await Supervisor(server, plan).run()


@dataclass(slots=True)
class Worker:
    """One slot's current process as the supervisor sees it."""

    slot: int
    epoch: int
    pid: int
    pidfd: int
    channel: ControlChannel
    control: socket.socket            # the supervisor's end of the control pair
    started_at: float
    ready: asyncio.Future[str | None]   # None: Ready; a text: why it did not start
    exited: asyncio.Future[int]         # the exit status
    last_pong: float = 0.0
    load: int = 0                       # subscriptions held, from its last Load
    pending_mi: dict[int, asyncio.Future[MIReply]] = field(default_factory=dict)
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)   # StatsReply, Prepared by id/gen
    reader: asyncio.Task[None] | None = None


class Supervisor:
    """Forks, watches and stops the workers of one loaded server (see the module docstring)."""

    def __init__(self, server: Server, plan: WorkerPlan, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.plan = plan
        self.clock = clock
        self.policy = RestartPolicy(plan.restart_backoff)
        self.workers: dict[int, Worker] = {}
        self.epochs: dict[int, int] = {}
        self.sockets: WorkerSockets | None = None
        self.stopping = False
        self.serving = False   # every worker started once: from now on an exit is restarted
        self._stop_requested = asyncio.Event()
        self._restarts: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mi_ids = itertools.count(1)   # MIRequest ids, StatsRequest ids and reload generations
        self._reload_lock = asyncio.Lock()
        self._pings = itertools.count(1)
        # one inbox per slot, made before any fork and kept while the supervisor lives: what is sent
        # to a restarting slot waits in the kernel for its new worker (docs/workers.md section 2)
        self.inboxes: list[Inbox] = []
        self.interest: SharedInterest | None = None
        self.slot_table = SlotTable.identity(plan.total)
        self._adoptions: dict[int, asyncio.Future[None]] = {}   # slot -> done when its Adopted came
        self._adopters: dict[int, int] = {}                     # slot being adopted -> by which slot

    # ------------------------------------------------------------------ start
    async def run(self) -> int:
        """The supervisor's whole life; the exit status of `routescript run`."""
        from routescript.core.server import log_load_error

        lifecycle = self.server.lifecycle
        lifecycle.start_logging()
        set_process_name("routescript")
        asyncio.get_running_loop().set_default_executor(ThreadPerCallExecutor())
        try:
            self.sockets = sockets = WorkerSockets.bind(self.plan)
        except LoadError as exc:
            log_load_error(exc)
            return 1
        pid_file: PidFile | None = None
        try:
            # chroot: the workers are forked inside the new root, restarted ones too
            lifecycle.confinement.confine(lifecycle.notifier, sockets.infos())
            pid_file = lifecycle.confinement.write_pid_file()   # the supervisor's id: the one to signal
            lifecycle.confinement.drop_privileges()
        except LoadError as exc:
            log_load_error(exc)
            if pid_file is not None:
                pid_file.remove()
            sockets.close()
            return 1
        self.inboxes = [Inbox(slot) for slot in range(self.plan.total)]
        # which workers hold watchers of which presentity (interest.py): shared memory made before fork
        self.interest = SharedInterest(self.plan.total) if self.plan.affinity == "uri" else None
        self._install_signals()
        try:
            try:
                error = await self._start_workers()
            except (OSError, RuntimeError) as exc:   # fork failed (EAGAIN), or a thread runs here
                error = f"cannot start the worker processes: {exc}"
            if error is None:
                error = await self._start_own_modules()
            if error is not None:
                log.error("%s", error)
                log.error("aborting: a worker process failed to start")
                return 1
            listening = ", ".join(b.name for b in sockets.bound)
            log.log(NOTICE, "routescript started: %s, %d worker processes, listening on %s", self.server.path,
                    self.plan.total, listening)
            lifecycle.notifier.ready(f"{self.plan.total} worker processes, listening on {listening}")
            self._spawn(lifecycle.notifier.watchdog())   # cancelled with the other tasks at stop
            watchdog = self._spawn(self._watch())
            stopped = asyncio.ensure_future(lifecycle.wait_stopped())   # MI kill
            requested = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait([stopped, requested], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            requested.cancel()
            watchdog.cancel()
        finally:
            lifecycle.notifier.stopping()
            clean = await self._stop_workers()
            await self.server.stop()
            self._remove_signals()
            sockets.close()
            for inbox in self.inboxes:
                inbox.close()
            if pid_file is not None:
                pid_file.remove()
        return 0 if clean else 1

    async def _start_workers(self) -> str | None:
        """Worker 0 first (it creates the schema and runs startup_route), then the others together.
        None when all are Ready, else the first error."""
        first = await self._fork(0)
        error = await self._ready(first)
        if error is not None:
            return error
        others = [await self._fork(slot) for slot in range(1, self.plan.total)]
        errors = [e for e in await asyncio.gather(*(self._ready(w) for w in others)) if e is not None]
        if errors:
            return errors[0]
        self.serving = True
        return None

    async def _ready(self, worker: Worker) -> str | None:
        try:
            return await asyncio.wait_for(asyncio.shield(worker.ready), START_TIMEOUT)
        except TimeoutError:
            return f"worker w{worker.slot} did not start within {START_TIMEOUT:.0f} s"

    async def _start_own_modules(self) -> str | None:
        from routescript.mi import mi_registry

        try:
            await self.server.lifecycle.start_supervisor()
        except LoadError as exc:
            return "\n".join(str(d) for d in exc.diagnostics)
        registry = mi_registry(self.server)
        registry.forward = self.forward_mi
        registry.processes = self.ps_rows
        registry.gather_statistics = self.gather_statistics
        registry.reload_routes = self.reload_routes
        return None

    # ------------------------------------------------------------------ fork, reap, restart
    async def _fork(self, slot: int) -> Worker:
        """Fork the worker of `slot` (epoch + 1) with a new control pair."""
        assert self.sockets is not None
        if threading.active_count() != 1:
            # a fork copies one thread: another one's locks would stay locked in the child forever
            raise RuntimeError(f"refusing to fork w{slot}: {threading.active_count()} threads run in the "
                               "supervisor")
        epoch = self.epochs.get(slot, 0) + 1
        self.epochs[slot] = epoch
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:   # the worker: it never returns from here
            code = 1
            try:
                others = [w.control for w in self.workers.values()]
                after_fork(slot, [ours, *others], [w.pidfd for w in self.workers.values()])
                node = self._node(slot, epoch)
                code = run_worker(self.server, slot, epoch, self.sockets.of(slot), theirs, node)
            except BaseException:   # noqa: BLE001 - the child must reach os._exit, whatever happened
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        loop = asyncio.get_running_loop()
        now = self.clock()
        self.policy.started(slot, now)
        worker = Worker(slot, epoch, pid, os.pidfd_open(pid), await ControlChannel.open(ours), ours, now,
                        loop.create_future(), loop.create_future(), last_pong=now)
        self.workers[slot] = worker
        loop.add_reader(worker.pidfd, self._reap, worker)
        worker.reader = self._spawn(self._follow(worker))
        log.info("w%d forked: pid %d, epoch %d", slot, pid, epoch)
        return worker

    def _node(self, slot: int, epoch: int) -> WorkerNode:
        """In the child of `slot`: its connections to the other workers (its own inbox only to read)."""
        from .node import WorkerNode, WorkerPlace

        for inbox in self.inboxes:
            if inbox.slot != slot:
                inbox.close_receive_end()
        return WorkerNode(self.server, WorkerPlace(slot, self.plan.total, epoch - 1), self.inboxes,
                          affinity=self.plan.affinity, slot_table=self.slot_table, interest=self.interest)

    def _reap(self, worker: Worker) -> None:
        """The worker's pidfd is readable: it exited."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.pidfd)
        try:
            _pid, status = os.waitpid(worker.pid, os.WNOHANG)
        except ChildProcessError:
            status = 0
        os.close(worker.pidfd)
        code = os.waitstatus_to_exitcode(status)
        if not worker.exited.done():
            worker.exited.set_result(code)
        # the channel is left to its reader: a StartFailed sent just before the exit is still to be read
        for fut in [*worker.pending_mi.values(), *worker.pending.values()]:
            if not fut.done():
                fut.set_exception(ConnectionError(f"worker w{worker.slot} exited"))
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        if self.stopping or not self.serving:   # a failed first start ends the supervisor instead
            return
        delay = self.policy.exited(worker.slot, self.clock())
        log.error("w%d (pid %d) exited (%s): restarting in %.1f s", worker.slot, worker.pid, _describe(code),
                  delay)
        self._restarts[worker.slot] = loop.call_later(delay, self._restart, worker.slot)
        for slot, adopter in list(self._adopters.items()):   # it was adopting: that slot may restart
            adoption = self._adoptions.get(slot)
            if adopter == worker.slot and adoption is not None and not adoption.done():
                log.error("w%d exited while adopting w%d", worker.slot, slot)
                adoption.set_result(None)
        # it may have died between a commit and its announcement: the others read their state again
        self._resync_live(f"w{worker.slot} exited")
        loop.call_later(ADOPT_AFTER, self._adopt_if_down, worker.slot)

    def _restart(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if not self.stopping:
            self._spawn(self._restart_slot(slot))

    async def _restart_slot(self, slot: int) -> None:
        adoption = self._adoptions.get(slot)
        if adoption is not None:   # never two owners: the restart waits for the adopter's Adopted
            try:
                await asyncio.wait_for(asyncio.shield(adoption), ADOPT_TIMEOUT)
            except TimeoutError:
                log.error("w%d: no Adopted within %.0f s: restarting it anyway", slot, ADOPT_TIMEOUT)
            self._adoptions.pop(slot, None)
            self._adopters.pop(slot, None)
            if self.stopping:
                return
        try:
            worker = await self._fork(slot)
        except (OSError, RuntimeError) as exc:
            log.error("cannot restart w%d: %s; trying again later", slot, exc)
            delay = self.policy.exited(slot, self.clock())
            self._restarts[slot] = asyncio.get_running_loop().call_later(delay, self._restart, slot)
            return
        error = await self._ready(worker)
        if error is not None:
            log.error("%s", error)
            _signal(worker, signal.SIGKILL)   # reaped as a crash: the back-off goes on
        else:
            log.log(NOTICE, "w%d restarted: pid %d, epoch %d", slot, worker.pid, worker.epoch)
            if self.slot_table.owner_of[slot] != slot:   # adopted meanwhile: its new dialogs are its own
                self._set_owner(slot, slot)

    async def _follow(self, worker: Worker) -> None:
        """Read the worker's control channel until EOF; a worker gone before Ready or StartFailed is a
        start failure."""
        try:
            await self._read_control(worker)
        finally:
            worker.channel.close()
            if not worker.ready.done():
                code = await worker.exited
                worker.ready.set_result(f"worker w{worker.slot} exited ({_describe(code)}) before it was "
                                        "ready")

    async def _read_control(self, worker: Worker) -> None:
        try:
            while (message := await worker.channel.receive()) is not None:
                if isinstance(message, Ready):
                    if not worker.ready.done():
                        worker.ready.set_result(None)
                elif isinstance(message, StartFailed):
                    if not worker.ready.done():
                        worker.ready.set_result(message.error)
                elif isinstance(message, Pong):
                    worker.last_pong = self.clock()
                elif isinstance(message, MIReply):
                    fut = worker.pending_mi.pop(message.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(message)
                elif isinstance(message, StatsReply | Prepared):
                    key = message.id if isinstance(message, StatsReply) else message.gen
                    answered = worker.pending.pop(key, None)
                    if answered is not None and not answered.done():
                        answered.set_result(message)
                elif isinstance(message, Load):
                    worker.load = message.subscriptions
                elif isinstance(message, Adopted):
                    self._adopted(worker, message)
                else:
                    log.error("w%d sent %s, which only the supervisor sends", worker.slot, message.type)
        except ConnectionResetError:
            pass   # it exited with a message of ours unread (Stop): its pidfd says how
        except (ControlError, OSError) as exc:
            log.error("w%d: control channel: %s: killing it", worker.slot, exc)
            _signal(worker, signal.SIGKILL)

    async def _watch(self) -> None:
        """Ping every worker; one silent for WATCHDOG seconds is killed (then restarted as a crash)."""
        while True:
            await asyncio.sleep(PING_INTERVAL)
            now = self.clock()
            for worker in list(self.workers.values()):
                if not worker.ready.done() or worker.exited.done():
                    continue
                if now - worker.last_pong > WATCHDOG:
                    log.error("w%d (pid %d) answered no ping for %.0f s: killing it", worker.slot, worker.pid,
                              now - worker.last_pong)
                    _signal(worker, signal.SIGKILL)
                else:
                    worker.channel.send(Ping(next(self._pings)))

    # ------------------------------------------------------------------ state of dead workers
    def _resync_live(self, reason: str) -> None:
        """Resync to every running worker's inbox (docs/workers.md 3, feed B's repair)."""
        for slot, worker in self.workers.items():
            if worker.exited.done():
                continue
            try:
                self.inboxes[slot].send(Resync(reason))
            except InboxError as exc:   # full: it is busy reading; the next death sends another
                log.error("w%d: resync not sent: %s", slot, exc)

    def _adopt_if_down(self, slot: int) -> None:
        """ADOPT_AFTER seconds after `slot`'s worker died: still not running (its back-off goes on), a
        live worker, the one holding the fewest subscriptions, adopts its state (docs/workers.md 5)."""
        if self.stopping or slot in self.workers or slot in self._adoptions:
            return
        live = [w for w in self.workers.values()
                if w.ready.done() and w.ready.result() is None and not w.exited.done()]
        if not live:
            log.error("w%d is down and no worker runs to adopt its state", slot)
            return
        adopter = min(live, key=lambda w: (w.load, w.slot))
        log.warning("w%d has not been running for %.0f s: w%d adopts its state", slot, ADOPT_AFTER,
                    adopter.slot)
        self._adoptions[slot] = asyncio.get_running_loop().create_future()
        self._adopters[slot] = adopter.slot
        adopter.channel.send(Adopt(slot))

    def _adopted(self, adopter: Worker, message: Adopted) -> None:
        fut = self._adoptions.get(message.slot)
        if message.error:
            log.error("w%d could not adopt w%d: %s", adopter.slot, message.slot, message.error)
        else:
            log.log(NOTICE, "w%d adopted w%d (%d subscriptions)", adopter.slot, message.slot, message.adopted)
            self._set_owner(message.slot, adopter.slot)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _set_owner(self, slot: int, owner: int) -> None:
        """Slot `slot`'s messages go to `owner` from now on (and those of slots it had adopted, when it is
        adopted in turn); the new table to every worker."""
        owner_of = list(self.slot_table.owner_of)
        old = owner_of[slot]
        for s, o in enumerate(owner_of):
            if s == slot or (owner != slot and o == old == slot):
                owner_of[s] = owner
        self.slot_table = SlotTable(self.slot_table.version + 1, tuple(owner_of))
        log.info("slot table version %d: %s", self.slot_table.version,
                 ", ".join(f"w{s}->w{o}" for s, o in enumerate(owner_of)))
        update = SlotTableUpdate(self.slot_table.version, list(owner_of))
        for worker in self.workers.values():
            worker.channel.send(update)

    # ------------------------------------------------------------------ stop, signals
    async def _stop_workers(self) -> bool:
        """Stop to every worker, SIGKILL to those still running after the stop bound, reap them all. True
        when every worker stopped by itself with status 0."""
        self.stopping = True
        for handle in self._restarts.values():
            handle.cancel()
        self._restarts.clear()
        workers = list(self.workers.values())
        for worker in workers:
            worker.channel.send(Stop())
            _signal(worker, signal.SIGTERM)   # also stops one that is still starting
        exits = [w.exited for w in workers]
        late: set[asyncio.Future[int]] = set()
        if exits:
            bound = stop_timeout(self.server)
            _done, late = await asyncio.wait(exits, timeout=bound)
            for worker in workers:
                if worker.exited in late:
                    log.error("w%d (pid %d) did not stop within %.0f s: SIGKILL", worker.slot, worker.pid,
                              bound)
                    _signal(worker, signal.SIGKILL)
            if late:
                await asyncio.wait(late, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        failed = [w for w in workers if not w.exited.done() or w.exited.result() != 0]
        for worker in failed:
            if worker.exited.done() and worker.exited not in late:
                log.error("w%d (pid %d) stopped with %s", worker.slot, worker.pid,
                          _describe(worker.exited.result()))
        return not failed

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_requested.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _reload_on_signal(self) -> None:
        from routescript.core.sdnotify import reload_telling

        log.info("SIGHUP: reloading the routes of every worker")
        self._spawn(reload_telling(self.server.lifecycle.notifier, self.reload_routes()))

    # ------------------------------------------------------------------ reload (all or none)
    async def reload_routes(self) -> list[LoadDiagnostic]:
        """docs/workers.md section 6: the supervisor compiles the script (an error: no worker is asked),
        every worker prepares it aside and checks it read the same files, then all commit, the supervisor
        last (a worker forked later gets the new script), or all abort. The errors, or the warnings."""
        from routescript.core.loading import PlainDiagnostic

        async with self._reload_lock:
            loader = self.server.loader
            prepared = loader.prepare_reload()
            if prepared.errors:
                return prepared.errors
            gen = next(self._mi_ids)
            failures = await self._prepare_everywhere(gen, prepared.files_sha256)
            workers = list(self.workers.values())
            if failures:
                for worker in workers:
                    worker.channel.send(ReloadAbort(gen))
                log.error("reload_routes: aborted, every worker keeps the old script: %s",
                          "; ".join(failures))
                return [PlainDiagnostic(f"reload aborted, the old script is kept: {f}") for f in failures]
            for worker in workers:
                worker.channel.send(ReloadCommit(gen))
            loader.commit_reload(prepared)
            return prepared.warnings

    async def _prepare_everywhere(self, gen: int, files_sha256: str) -> list[str]:
        """ReloadPrepare to every slot's worker; why each one that is not Prepared within PREPARE_TIMEOUT
        is not (a slot restarting counts: its new process would start with the old script)."""
        answers = await asyncio.gather(*(self._request(slot, gen, ReloadPrepare(gen, files_sha256),
                                                       PREPARE_TIMEOUT, "to prepare the reload")
                                         for slot in range(self.plan.total)), return_exceptions=True)
        failures = []
        for slot, answer in enumerate(answers):
            if isinstance(answer, Prepared):
                if not answer.ok:
                    failures.append(f"w{slot}: {answer.error}")
            elif isinstance(answer, BaseException):
                failures.append(str(answer))
        return failures

    async def _request(self, slot: int, key: int, message: ReloadPrepare | StatsRequest, timeout: float,
                       what: str) -> Any:
        """Send `message` to the worker of `slot`, wait for its answer (StatsReply or Prepared) with `key`.
        ConnectionError naming the worker when it is not running, exits, or takes more than `timeout`."""
        worker = self.workers.get(slot)
        if worker is None or not worker.ready.done() or worker.ready.result() is not None:
            raise ConnectionError(f"w{slot}: not running (restarting)")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.pending[key] = fut
        try:
            worker.channel.send(message)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ConnectionError(f"w{slot} (pid {worker.pid}): no answer within {timeout:.0f} s "
                                  f"{what}") from None
        finally:
            worker.pending.pop(key, None)

    # ------------------------------------------------------------------ MI
    def ps_rows(self) -> list[dict[str, Any]]:
        """MI ps: the supervisor, then one row per slot (PID null while the slot restarts)."""
        assert self.sockets is not None
        rows: list[dict[str, Any]] = [{"ID": 0, "PID": os.getpid(), "Type": "attendant"}]
        for slot in range(self.plan.total):
            worker = self.workers.get(slot)
            reads = " ".join(self.sockets.names_read_by(slot))
            rows.append({"ID": slot + 1, "PID": worker.pid if worker is not None else None,
                         "Type": f"SIP worker w{slot}" + (f" {reads}" if reads else ""),
                         "Epoch": self.epochs.get(slot, 0), "Restarts": self.policy.restarts(slot)})
        return rows

    async def forward_mi(self, cmd: MICommand, params: Any) -> Any:
        """Run MI command `cmd` where it declares (MICommand.workers): "one" in worker 0, "each" and
        "concat" in every worker at once; its result, or a JSON-RPC error raised here (naming every
        worker that failed: never a partial answer)."""
        from routescript.mi.aggregate import MergeError, concat, each_result
        from routescript.mi.jsonrpc import SERVER_ERROR, JSONRPCError

        if cmd.workers not in ("each", "concat"):   # "one", or undeclared (tests/mi/test_placement.py)
            return await self._ask(0, cmd.name, params)
        results, errors = await self._ask_every(cmd.name, params)
        if cmd.workers == "each" or errors:
            result, error = each_result(results, errors)
            if error is not None:
                raise JSONRPCError(error.code, error.message, error.data)
            return result
        try:
            return concat(results, cmd.key)
        except MergeError as exc:
            raise JSONRPCError(SERVER_ERROR, data=f"{cmd.name}: {exc}") from None

    async def _ask_every(self, name: str, params: Any) -> tuple[list[Any], list[WorkerError]]:
        """MI command `name` in every worker at once: the results (slot order), the failures."""
        from routescript.mi.aggregate import WorkerError
        from routescript.mi.jsonrpc import SERVER_ERROR, JSONRPCError

        answers = await asyncio.gather(*(self._ask(slot, name, params) for slot in range(self.plan.total)),
                                       return_exceptions=True)
        results: list[Any] = []
        errors: list[WorkerError] = []
        for slot, answer in enumerate(answers):
            if isinstance(answer, JSONRPCError):
                errors.append(WorkerError(f"w{slot}", answer.code, answer.message, answer.data))
            elif isinstance(answer, BaseException):
                errors.append(WorkerError(f"w{slot}", SERVER_ERROR, "Server error", f"{answer}"))
            else:
                results.append(answer)
        return results, errors

    async def gather_statistics(self) -> Statistics:
        """Every worker's statistics merged (routescript.mi.aggregate.merge_statistics); a worker that
        does not answer within STATS_TIMEOUT is an MI error naming it."""
        from routescript.mi.aggregate import MergeError, merge_statistics
        from routescript.mi.jsonrpc import SERVER_ERROR, JSONRPCError

        requests = []
        for slot in range(self.plan.total):
            request_id = next(self._mi_ids)
            requests.append(self._request(slot, request_id, StatsRequest(request_id), STATS_TIMEOUT,
                                          "with its statistics"))
        answers = await asyncio.gather(*requests, return_exceptions=True)
        failed = [str(a) for a in answers if isinstance(a, BaseException)]
        if failed:
            raise JSONRPCError(SERVER_ERROR, "Statistics not available",
                               "; ".join(failed) + " (no partial sum is given)")
        try:
            return merge_statistics({f"w{slot}": a.rows for slot, a in enumerate(answers)
                                     if isinstance(a, StatsReply)})
        except MergeError as exc:
            raise JSONRPCError(SERVER_ERROR, "Statistics not available", str(exc)) from None

    async def _ask(self, slot: int, name: str, params: Any) -> Any:
        """One MIRequest/MIReply round trip with the worker of `slot`."""
        from routescript.mi.jsonrpc import SERVER_ERROR, JSONRPCError

        worker = self.workers.get(slot)
        if worker is None or not worker.ready.done() or worker.ready.result() is not None:
            raise JSONRPCError(SERVER_ERROR, data=f"worker w{slot} is not running (restarting): retry")
        if len(worker.pending_mi) >= MI_IN_FLIGHT:
            raise JSONRPCError(SERVER_ERROR,
                               data=f"{MI_IN_FLIGHT} MI commands already wait for worker w{slot}")
        request_id = next(self._mi_ids)
        fut: asyncio.Future[MIReply] = asyncio.get_running_loop().create_future()
        worker.pending_mi[request_id] = fut
        try:
            worker.channel.send(MIRequest(request_id, name, params))
            reply = await asyncio.wait_for(fut, MI_TIMEOUT)
        except TimeoutError:
            raise JSONRPCError(SERVER_ERROR, data=f"worker w{slot} did not answer {name} within "
                                                  f"{MI_TIMEOUT:.0f} s") from None
        except (ConnectionError, ControlError) as exc:
            raise JSONRPCError(SERVER_ERROR, data=f"w{slot}: {name}: {exc}") from None
        finally:
            worker.pending_mi.pop(request_id, None)
        if reply.ok:
            return reply.result
        error = reply.result if isinstance(reply.result, dict) else {}
        raise JSONRPCError(int(error.get("code", SERVER_ERROR)), error.get("message"), error.get("data"))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class ThreadPerCallExecutor(Executor):
    """The supervisor's default executor: one thread per call, gone when the call returns. The standard
    pool keeps its idle threads, and one thread too many makes every later fork refuse (mi_http checks
    passwords in a thread: asyncio.to_thread)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:   # noqa: BLE001 - handed to the caller through the future
                future.set_exception(exc)

        threading.Thread(target=run, name="routescript-supervisor-call", daemon=True).start()
        return future


def stop_timeout(server: Server) -> float:
    """Seconds the workers get to stop: in-flight messages, then closing, shutdown_timeout each
    (Lifecycle.stop), and STOP_MARGIN for the process's own exit."""
    return 2 * float(server.config.get("shutdown_timeout")) + STOP_MARGIN


def _signal(worker: Worker, sig: int) -> None:
    """Send `sig` through the worker's pidfd (never to another process that got its PID since)."""
    if worker.exited.done():
        return
    try:
        signal.pidfd_send_signal(worker.pidfd, sig)
    except ProcessLookupError:
        pass   # exiting: its pidfd reports it


def _describe(code: int) -> str:
    """waitstatus_to_exitcode's value in words: `status 1` or `killed by SIGKILL`."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:   # a real-time signal has no name
            return f"killed by signal {-code}"
    return f"status {code}"
