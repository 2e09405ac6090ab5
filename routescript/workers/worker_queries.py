"""Questions the supervisor puts to its workers over their control channels and waits for: MI commands
where they declare to run (MICommand.workers), the statistics of every worker merged, and any other
request with its answer (the reload's Prepared). A worker that does not answer is an error naming it,
never a partial answer (docs/workers.md section 5)."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

from .control import ControlError, MIReply, MIRequest, ReloadPrepare, StatsReply, StatsRequest

if TYPE_CHECKING:
    from routescript.core.module import MICommand
    from routescript.core.stats import Statistics
    from routescript.mi.aggregate import WorkerError

    from .worker_process import Worker

MI_TIMEOUT = 30.0        # seconds a forwarded MI command may take (a table walk is the longest)
MI_IN_FLIGHT = 64        # forwarded MI commands waiting per worker
STATS_TIMEOUT = 5.0      # seconds a worker may take to send its statistics


class WorkerQueries:
    """Round trips with the workers of `workers` (the supervisor's own table, slot -> Worker, kept up
    to date by it) among `total` slots."""

    def __init__(self, workers: dict[int, Worker], total: int) -> None:
        self._workers = workers
        self._total = total
        self._ids = itertools.count(1)   # MIRequest ids, StatsRequest ids and reload generations

    def next_id(self) -> int:
        """A request id or reload generation: one count, so that an answer is never taken for another's."""
        return next(self._ids)

    async def request(self, slot: int, key: int, message: ReloadPrepare | StatsRequest, timeout: float,
                      what: str) -> Any:
        """Send `message` to the worker of `slot`, wait for its answer (StatsReply or Prepared) with `key`.
        ConnectionError naming the worker when it is not running, exits, or takes more than `timeout`."""
        worker = self._workers.get(slot)
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

        answers = await asyncio.gather(*(self._ask(slot, name, params) for slot in range(self._total)),
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
        for slot in range(self._total):
            request_id = self.next_id()
            requests.append(self.request(slot, request_id, StatsRequest(request_id), STATS_TIMEOUT,
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

        worker = self._workers.get(slot)
        if worker is None or not worker.ready.done() or worker.ready.result() is not None:
            raise JSONRPCError(SERVER_ERROR, data=f"worker w{slot} is not running (restarting): retry")
        if len(worker.pending_mi) >= MI_IN_FLIGHT:
            raise JSONRPCError(SERVER_ERROR,
                               data=f"{MI_IN_FLIGHT} MI commands already wait for worker w{slot}")
        request_id = self.next_id()
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
