"""A worker process: what it does right after the supervisor forked it, and its main loop
(docs/workers.md, section 1, "Worker after fork").

after_fork() makes the forked copy of the supervisor a process of its own: default signal handlers,
no trace of the supervisor's event loop, the supervisor's ends of every control pair closed (so that a
worker sees EOF when the supervisor is gone), a process title. run_worker() then runs the worker on a new
event loop: Lifecycle.start_worker (adopt the inherited sockets, worker-side modules, startup_route and
timer_routes in worker 0), Ready or StartFailed on the control channel, then serve until Stop.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import signal
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from routescript.core.loading import LoadError
from routescript.script.diagnostics import without_repeats

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

if TYPE_CHECKING:
    from routescript.core.loading import PreparedReload
    from routescript.core.server import Server

    from .node import WorkerNode

log = logging.getLogger("routescript.workers")

_PR_SET_NAME = 15        # linux/prctl.h
_PR_SET_PDEATHSIG = 1


@functools.cache
def _libc_prctl() -> Any:
    """libc's prctl, or None where it does not exist (not Linux)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name, use_errno=True) if name else None
    return getattr(libc, "prctl", None)


def set_process_name(name: str) -> None:
    """The name `top` and `ps -L`/`ps -o comm` show (PR_SET_NAME: at most 15 bytes). Skipped only where
    prctl does not exist."""
    prctl = _libc_prctl()
    if prctl is not None:
        prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Receive `sig` when the supervisor dies, even by SIGKILL (PR_SET_PDEATHSIG): no orphan keeps the
    SIP sockets. The control channel's EOF says the same; this also covers a worker stuck in start-up."""
    prctl = _libc_prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def after_fork(slot: int, supervisor_sockets: Iterable[socket.socket], supervisor_fds: Iterable[int]) -> None:
    """In the child, before anything else: see the module docstring."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # Ctrl-C in a terminal reaches the whole process group: the supervisor stops the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_loop = asyncio.events._get_running_loop()
    # Python 3.11 has no at-fork hook for asyncio: the supervisor's loop is "running" in this copy too.
    asyncio.events._set_running_loop(None)
    selector = getattr(parent_loop, "_selector", None)   # the stdlib loop's epoll fd (uvloop keeps its own)
    if selector is not None:
        selector.close()
    for sock in supervisor_sockets:
        sock.close()
    for fd in supervisor_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    die_with_parent()
    set_process_name(f"routescript w{slot}")
    gc.freeze()   # what the supervisor made stays in shared pages (copy-on-write)


def run_worker(server: Server, slot: int, epoch: int, sockets: Sequence[tuple[socket.socket, bool, str]],
               control: socket.socket, node: WorkerNode | None = None) -> int:
    """The worker's whole life on a new event loop; its exit status."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(serve_worker(server, slot, epoch, sockets, control, node))
    finally:
        loop.close()


async def serve_worker(server: Server, slot: int, epoch: int,
                       sockets: Sequence[tuple[socket.socket, bool, str]],
                       control: socket.socket, node: WorkerNode | None = None) -> int:
    channel = await ControlChannel.open(control)
    _forget_supervisor_mi(server)
    try:
        # timer_routes in worker 0; startup_route once (its first start), as OpenSIPS runs it once
        await server.lifecycle.start_worker(sockets, timers=slot == 0, startup_route=slot == 0 and epoch == 1,
                                            node=node)
    except LoadError as exc:
        channel.send(StartFailed(slot, "\n".join(str(d) for d in without_repeats(exc.diagnostics))))
        await channel.drain()
        return 1
    except Exception as exc:   # our bug: start_worker closed what it opened; the supervisor reports it
        log.exception("w%d: start-up failed", slot)
        channel.send(StartFailed(slot, f"w{slot}: start-up failed: {type(exc).__name__}: {exc}"))
        await channel.drain()
        return 1
    reading = [s.name for s, (_, read, _proto) in zip(server.sockets, sockets, strict=False) if read]
    log.info("w%d (epoch %d) started: reading %s", slot, epoch, ", ".join(reading) or "nothing")
    channel.send(Ready(slot, os.getpid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # A reload is the supervisor's (all workers or none: ReloadPrepare/Commit): one worker reloading
    # alone would run another script than its siblings.
    loop.add_signal_handler(signal.SIGHUP, _sighup_ignored, slot)
    control_task = asyncio.ensure_future(_follow_control(server, slot, channel, stop, node))
    stopped = asyncio.ensure_future(server.lifecycle.wait_stopped())
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiter, stopped], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    control_task.cancel()
    clean = await server.stop()
    channel.close()
    return 0 if clean else 1


def _forget_supervisor_mi(server: Server) -> None:
    """A worker forked after the supervisor's MI started inherits a registry that forwards to workers:
    here it runs every command itself."""
    from routescript.mi.registry import existing_registry

    registry = existing_registry(server)
    if registry is not None:
        registry.forward = None
        registry.processes = None
        registry.gather_statistics = None
        registry.reload_routes = None


async def _follow_control(server: Server, slot: int, channel: ControlChannel, stop: asyncio.Event,
                          node: WorkerNode | None = None) -> None:
    """Answer the supervisor until Stop or EOF (the supervisor is gone: stop too)."""
    tasks: set[asyncio.Task[None]] = set()
    staged: dict[int, PreparedReload] = {}   # reloads prepared, waiting for ReloadCommit/ReloadAbort
    try:
        while (message := await channel.receive()) is not None:
            if isinstance(message, Ping):
                channel.send(Pong(message.seq))
                if node is not None:
                    channel.send(Load(node.load()))
            elif isinstance(message, StatsRequest):
                from routescript.mi.aggregate import snapshot

                channel.send(StatsReply(message.id, snapshot(server.statistics)))
            elif isinstance(message, ReloadPrepare):
                channel.send(_prepare_reload(server, slot, message, staged))
            elif isinstance(message, ReloadCommit):
                _commit_reload(server, slot, message.gen, staged)
            elif isinstance(message, ReloadAbort):
                if staged.pop(message.gen, None) is not None:
                    log.warning("w%d: reload %d aborted by the supervisor: the old script is kept", slot,
                                message.gen)
            elif isinstance(message, MIRequest):
                task = asyncio.ensure_future(_run_mi(server, channel, message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif isinstance(message, Adopt) and node is not None:
                task = asyncio.ensure_future(_adopt(node, channel, message.slot))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif isinstance(message, SlotTableUpdate) and node is not None:
                try:
                    node.set_slot_table(message.version, message.owner_of)
                except (ValueError, TypeError) as exc:
                    log.error("w%d: slot table %s refused: %s", slot, message, exc)
            elif isinstance(message, Stop):
                break
            else:
                log.error("w%d: unexpected control message %s from the supervisor", slot, message.type)
        else:
            log.warning("w%d: the supervisor closed the control channel: stopping", slot)
    except ControlError as exc:
        log.error("w%d: bad control message from the supervisor: %s: stopping", slot, exc)
    except OSError as exc:
        log.warning("w%d: control channel failed: %s: stopping", slot, exc)
    stop.set()


def _sighup_ignored(slot: int) -> None:
    log.warning("w%d: SIGHUP ignored: a reload goes through the supervisor (pid %d), which reloads every "
                "worker or none", slot, os.getppid())


def _prepare_reload(server: Server, slot: int, message: ReloadPrepare,
                    staged: dict[int, PreparedReload]) -> Prepared:
    """Compile the script aside (docs/workers.md section 6, step 2): Prepared ok when it compiles and
    its files are the ones the supervisor checked; kept in `staged` until commit or abort."""
    staged.clear()   # an older generation never committed: the supervisor moved on
    prepared = server.loader.prepare_reload()
    if prepared.errors:
        return Prepared(message.gen, False, "; ".join(str(d) for d in prepared.errors))
    if prepared.files_sha256 != message.files_sha256:
        log.error("w%d: reload %d refused: the script files changed after the supervisor read them", slot,
                  message.gen)
        return Prepared(message.gen, False, "the script files changed after the supervisor read them "
                                            "(their SHA-256 differs): reload again")
    staged[message.gen] = prepared
    return Prepared(message.gen, True)


def _commit_reload(server: Server, slot: int, gen: int, staged: dict[int, PreparedReload]) -> None:
    prepared = staged.pop(gen, None)
    if prepared is None:   # a bug of ours: say it, keep running the old script
        log.error("w%d: ReloadCommit %d without its ReloadPrepare: the old script is kept", slot, gen)
        return
    server.loader.commit_reload(prepared)


async def _adopt(node: WorkerNode, channel: ControlChannel, slot: int) -> None:
    """The supervisor's Adopt: take dead worker `slot`'s state, then say Adopted (with the error, if
    any: the supervisor restarts the slot either way)."""
    try:
        rows = await node.adopt(slot)
    except Exception as exc:   # a database failure, or our bug: the supervisor must hear of it
        log.exception("w%d: adopting w%d failed", node.place.slot, slot)
        channel.send(Adopted(slot, 0, f"{type(exc).__name__}: {exc}"))
        return
    log.info("w%d adopted w%d: %d rows", node.place.slot, slot, rows)
    channel.send(Adopted(slot, rows))


async def _run_mi(server: Server, channel: ControlChannel, request: MIRequest) -> None:
    from routescript.mi import mi_registry
    from routescript.mi.jsonrpc import SERVER_ERROR, JSONRPCError

    try:
        result = await mi_registry(server).dispatch(request.name, request.params)
        reply = MIReply(request.id, True, result)
    except JSONRPCError as exc:
        reply = MIReply(request.id, False, exc.to_json())
    except Exception as exc:   # dispatch turns a command's failure into JSONRPCError already
        log.exception("MI %s failed", request.name)
        reply = MIReply(request.id, False, {"code": SERVER_ERROR, "message": f"{type(exc).__name__}: {exc}"})
    try:
        channel.send(reply)
    except ControlError as exc:   # a reply over the line bound
        channel.send(MIReply(request.id, False, {"code": SERVER_ERROR, "message": str(exc)}))
