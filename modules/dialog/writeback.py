"""Writing the dialog table: which dialogs wait for their row and when they are written (db_mode 1: at
the end of the loop turn; 2: every db_update_period; 3: at stop). The rows themselves are persistence.py's
(pure); loading them back into the table is the module's (it owns the table and DLGCB_LOADED)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from .api import DlgState
from .core import Dialog
from .persistence import TABLE, row_of

log = logging.getLogger("routescript.dialog")

MAX_PENDING_WRITES = 200_000   # dialogs waiting for their row write: over it, logged and dropped


class TableWriter:
    """The database handle of the dialog table and the rows waiting to be written (none in db_mode 0)."""

    def __init__(self, db_mode: int, db_url: str, update_period: float) -> None:
        self.db_mode = db_mode
        self.db_url = db_url
        self.update_period = update_period
        self.db: Any = None
        self._pending: dict[int, Dialog | None] = {}   # db_id -> the dialog to write, None: delete its row
        self._flushing: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._periodic: asyncio.Task[None] | None = None

    async def open(self, server: Any) -> None:
        """The database opened, the table made when missing."""
        self.db = await server.database(self.db_url)
        await self.db.ensure_schema([TABLE])

    async def rows(self) -> list[dict[str, Any]]:
        """The stored dialogs' rows (to load them back at start)."""
        rows: list[dict[str, Any]] = await self.db.query(TABLE)
        return rows

    def start_periodic(self) -> None:
        """db_mode 2: the writes of every db_update_period, from now on."""
        if self.db_mode == 2:
            self._periodic = asyncio.get_running_loop().create_task(self._every_period())

    def delete_row(self, db_id: int) -> None:
        """A stored dialog that is over (expired while we were down): its row goes."""
        self._pending[db_id] = None

    def loaded(self) -> None:
        """After the load: in db_mode 1 the deletions it queued are written now."""
        if self._pending and self.db_mode == 1:
            self._schedule_flush()

    def mark(self, dlg: Dialog) -> None:
        if not self.db_mode:
            return
        if dlg.state is DlgState.DELETED:
            self._pending[dlg.db_id] = None
        elif dlg.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED):
            if len(self._pending) >= MAX_PENDING_WRITES and dlg.db_id not in self._pending:
                log.error("dialog %s (Call-ID %s): %d row writes pending: not stored", dlg.dlg_id,
                          dlg.call_id, len(self._pending))
                return
            self._pending[dlg.db_id] = dlg
        else:
            return
        if self.db_mode == 1:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flushing is not None or self.db is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flushing = loop.create_task(self.flush())

    async def flush(self) -> None:
        """Every pending row written in one transaction; on failure logged, kept and retried in 1 s."""
        try:
            while self._pending and self.db is not None:
                batch, self._pending = self._pending, {}
                try:
                    async with self.db.transaction():
                        for db_id, dlg in batch.items():
                            if dlg is None:
                                await self.db.delete(TABLE, {"dlg_id": db_id})
                            else:
                                await self.db.upsert(TABLE, row_of(dlg), ["dlg_id"])
                                dlg.db_dirty = False
                                dlg.db_stored = True
                except Exception as exc:  # noqa: BLE001 - DatabaseError or a bad row: logged, retried
                    log.error("dialog table: %d row(s) not written: %s", len(batch), exc)
                    for db_id, dlg in batch.items():
                        self._pending.setdefault(db_id, dlg)
                    if self.db_mode == 1 and self._retry is None:
                        self._retry = asyncio.get_running_loop().call_later(1.0, self._retry_flush)
                    return
        finally:
            self._flushing = None

    def _retry_flush(self) -> None:
        self._retry = None
        self._schedule_flush()

    async def _every_period(self) -> None:
        while True:
            await asyncio.sleep(self.update_period)
            if self._flushing is None:
                self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def stop(self, dialogs: Iterable[Dialog]) -> None:
        """The last writes (db_mode 3: every dialog now) before the server stops."""
        if self._periodic is not None:
            self._periodic.cancel()
        if self._retry is not None:
            self._retry.cancel()
        if self.db is not None:
            if self._flushing is not None:
                await asyncio.gather(self._flushing, return_exceptions=True)
            if self.db_mode == 3:
                for dlg in dialogs:
                    self.mark(dlg)
            await self.flush()
