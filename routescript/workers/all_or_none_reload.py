"""reload_routes with worker processes, all or none (docs/workers.md section 6): the supervisor compiles
the script itself, every worker prepares it aside (ReloadPrepare/Prepared), then all commit or all
abort."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .control import Prepared, ReloadAbort, ReloadCommit, ReloadPrepare

if TYPE_CHECKING:
    from routescript.core.loading import LoadDiagnostic
    from routescript.core.server import Server

    from .worker_process import Worker
    from .worker_queries import WorkerQueries

log = logging.getLogger("routescript.workers")

PREPARE_TIMEOUT = 10.0   # seconds every worker gets to compile a reloaded script aside


class AllOrNoneReload:
    """The reload of `server`'s script in the supervisor and every worker of `workers` (the supervisor's
    table, slot -> Worker) among `total` slots; one at a time."""

    def __init__(self, server: Server, workers: dict[int, Worker], total: int,
                 queries: WorkerQueries) -> None:
        self._server = server
        self._workers = workers
        self._total = total
        self._queries = queries
        self._lock = asyncio.Lock()

    async def reload_routes(self) -> list[LoadDiagnostic]:
        """docs/workers.md section 6: the supervisor compiles the script (an error: no worker is asked),
        every worker prepares it aside and checks it read the same files, then all commit, the supervisor
        last (a worker forked later gets the new script), or all abort. The errors, or the warnings."""
        from routescript.core.loading import PlainDiagnostic

        async with self._lock:
            loader = self._server.loader
            prepared = loader.prepare_reload()
            if prepared.errors:
                return prepared.errors
            gen = self._queries.next_id()
            failures = await self._prepare_everywhere(gen, prepared.files_sha256)
            workers = list(self._workers.values())
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
        answers = await asyncio.gather(*(self._queries.request(slot, gen, ReloadPrepare(gen, files_sha256),
                                                               PREPARE_TIMEOUT, "to prepare the reload")
                                         for slot in range(self._total)), return_exceptions=True)
        failures = []
        for slot, answer in enumerate(answers):
            if isinstance(answer, Prepared):
                if not answer.ok:
                    failures.append(f"w{slot}: {answer.error}")
            elif isinstance(answer, BaseException):
                failures.append(str(answer))
        return failures
