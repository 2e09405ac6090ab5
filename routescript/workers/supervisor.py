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

Its parts: worker_process.py (a worker as seen from here, its signals), worker_queries.py (MI and
statistics from the workers), all_or_none_reload.py, adoption.py (the state of dead workers, the slot
table), thread_per_call.py (its executor).
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
from typing import TYPE_CHECKING, Any

from routescript.core.loading import LoadError
from routescript.core.log import NOTICE

from .adoption import ADOPT_AFTER, SlotAdoption
from .all_or_none_reload import AllOrNoneReload
from .child import after_fork, run_worker, set_process_name
from .control import (
    Adopted,
    ControlChannel,
    ControlError,
    Load,
    MIReply,
    Ping,
    Pong,
    Prepared,
    Ready,
    StartFailed,
    StatsReply,
    Stop,
)
from .inbox import Inbox, InboxError
from .interest import SharedInterest
from .messages import Resync
from .plan import WorkerPlan, runs_workers
from .restart import RestartPolicy
from .sockets import WorkerSockets
from .thread_per_call import ThreadPerCallExecutor
from .worker_process import Worker, describe_exit, send_signal
from .worker_queries import WorkerQueries

if TYPE_CHECKING:
    from routescript.core.overrides import RunOptions
    from routescript.core.pidfile import PidFile
    from routescript.core.server import Server

    from .node import WorkerNode

log = logging.getLogger("routescript.workers")

START_TIMEOUT = 120.0    # seconds a worker may take to start (schema creation, startup_route)
STOP_MARGIN = 5.0        # seconds beyond a worker's own stop bound (2 x shutdown_timeout) before SIGKILL
PING_INTERVAL = 2.0
WATCHDOG = 10.0          # seconds without a Pong before a worker is killed


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


class Supervisor:
    """Forks, watches and stops the workers of one loaded server (see the module docstring)."""

    def __init__(self, server: Server, plan: WorkerPlan, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.plan = plan
        self.clock = clock
        self.policy = RestartPolicy(plan.restart_backoff)
        # slot -> its current process; shared with the parts below: changed in place, never replaced
        self.workers: dict[int, Worker] = {}
        self.epochs: dict[int, int] = {}
        self.sockets: WorkerSockets | None = None
        self.stopping = False
        self.serving = False   # every worker started once: from now on an exit is restarted
        self._stop_requested = asyncio.Event()
        self._restarts: dict[int, asyncio.TimerHandle] = {}
        # slots whose restart runs (fork, then Ready): not adopted meanwhile - never two owners
        self._restarting: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pings = itertools.count(1)
        # one inbox per slot, made before any fork and kept while the supervisor lives: what is sent
        # to a restarting slot waits in the kernel for its new worker (docs/workers.md section 2)
        self.inboxes: list[Inbox] = []
        self.interest: SharedInterest | None = None
        # the parts: questions to the workers (MI, statistics), the all-or-none reload, the state of
        # dead workers (adoption and the slot table)
        self.queries = WorkerQueries(self.workers, plan.total)
        self.reload = AllOrNoneReload(server, self.workers, plan.total, self.queries)
        self.adoption = SlotAdoption(self.workers, plan.total)

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
        registry.forward = self.queries.forward_mi
        registry.processes = self.ps_rows
        registry.gather_statistics = self.queries.gather_statistics
        registry.reload_routes = self.reload.reload_routes
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
                          affinity=self.plan.affinity, slot_table=self.adoption.slot_table,
                          interest=self.interest)

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
        log.error("w%d (pid %d) exited (%s): restarting in %.1f s", worker.slot, worker.pid,
                  describe_exit(code), delay)
        self._restarts[worker.slot] = loop.call_later(delay, self._restart, worker.slot)
        self.adoption.adopter_exited(worker)   # it was adopting: that slot may restart
        # it may have died between a commit and its announcement: the others read their state again
        self._resync_live(f"w{worker.slot} exited")
        loop.call_later(ADOPT_AFTER, self._adopt_if_down, worker.slot)

    def _restart(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if not self.stopping:
            self._spawn(self._restart_slot(slot))

    async def _restart_slot(self, slot: int) -> None:
        if await self.adoption.wait_before_restart(slot) and self.stopping:
            return
        self._restarting.add(slot)
        try:
            await self._restart_now(slot)
        finally:
            self._restarting.discard(slot)

    async def _restart_now(self, slot: int) -> None:
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
            send_signal(worker, signal.SIGKILL)   # reaped as a crash: the back-off goes on
        else:
            log.log(NOTICE, "w%d restarted: pid %d, epoch %d", slot, worker.pid, worker.epoch)
            self.adoption.restarted(slot)

    async def _follow(self, worker: Worker) -> None:
        """Read the worker's control channel until EOF; a worker gone before Ready or StartFailed is a
        start failure."""
        try:
            await self._read_control(worker)
        finally:
            worker.channel.close()
            if not worker.ready.done():
                code = await worker.exited
                worker.ready.set_result(f"worker w{worker.slot} exited ({describe_exit(code)}) before it was "
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
                    self.adoption.adopted(worker, message)
                else:
                    log.error("w%d sent %s, which only the supervisor sends", worker.slot, message.type)
        except ConnectionResetError:
            pass   # it exited with a message of ours unread (Stop): its pidfd says how
        except (ControlError, OSError) as exc:
            log.error("w%d: control channel: %s: killing it", worker.slot, exc)
            send_signal(worker, signal.SIGKILL)

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
                    send_signal(worker, signal.SIGKILL)
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
        """ADOPT_AFTER seconds after `slot`'s worker died (adoption.py), unless the supervisor stops or
        the slot's restart already runs: a back-off equal to ADOPT_AFTER fires both timers together,
        and an adoption then would give the slot two owners once its new worker is ready."""
        if not self.stopping and slot not in self._restarting:
            self.adoption.adopt_if_down(slot)

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
            send_signal(worker, signal.SIGTERM)   # also stops one that is still starting
        exits = [w.exited for w in workers]
        late: set[asyncio.Future[int]] = set()
        if exits:
            bound = stop_timeout(self.server)
            _done, late = await asyncio.wait(exits, timeout=bound)
            for worker in workers:
                if worker.exited in late:
                    log.error("w%d (pid %d) did not stop within %.0f s: SIGKILL", worker.slot, worker.pid,
                              bound)
                    send_signal(worker, signal.SIGKILL)
            if late:
                await asyncio.wait(late, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        failed = [w for w in workers if not w.exited.done() or w.exited.result() != 0]
        for worker in failed:
            if worker.exited.done() and worker.exited not in late:
                log.error("w%d (pid %d) stopped with %s", worker.slot, worker.pid,
                          describe_exit(worker.exited.result()))
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
        self._spawn(reload_telling(self.server.lifecycle.notifier, self.reload.reload_routes()))

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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def stop_timeout(server: Server) -> float:
    """Seconds the workers get to stop: in-flight messages, then closing, shutdown_timeout each
    (Lifecycle.stop), and STOP_MARGIN for the process's own exit."""
    return 2 * float(server.config.get("shutdown_timeout")) + STOP_MARGIN
