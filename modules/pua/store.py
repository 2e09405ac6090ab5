"""The pua table at run time: read back at start (each worker its own rows), written back every
update_period and at stop, as OpenSIPS's pua does (db_restore, db_update). docs/modules/pua.md.

Write-back: every period the records are compared with what was last written (by identity first: the
records are frozen and replaced on every change, so an unchanged one costs a dict lookup); a changed one
is written over its row (by the row's `id`), a new one inserted, a forgotten one's row deleted - all in one
transaction. A failed write is logged and retried at the next period (nothing is marked written).
Only confirmed records are written: a publication before its first 2xx (no ETag), a subscription before
its dialog (no To tag) - neither could be resumed by a restarted server.

Ownership (docs/workers.md 3, "pua"): a row belongs to the worker rows.row_owner names, which is the
worker the dispatcher sends that row's requests to; every worker loads only its own rows, so no record is
refreshed from two workers. Only the owner writes or deletes a row it holds; worker 0 (or the one process)
also deletes the rows nobody refreshed for long (`expires` older than STALE_AFTER past): rows of records
forgotten before their worker's last write-back (a kill -9).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .rows import (BadRow, is_subscription, publication_of, row_of_publication, row_of_subscription,
                   row_owner, subscription_of)
from .subscriptions import SubKey, SubRecord, SubsFull, SubTable
from .table import PubKey, PubRecord, PuaFull, PubTable

__all__ = ["LOADED_CSEQ_GAP", "STALE_AFTER", "PuaStore"]

log = logging.getLogger("routescript.pua")

STALE_AFTER = 120.0   # seconds past its granted end a row nobody rewrote is deleted (by worker 0)
# A subscription read back sends its next SUBSCRIBE this much above the stored CSeq: after a kill -9 the
# row may be up to update_period behind what was sent, and a notifier refuses a CSeq that goes back
# (RFC 3261 12.2.2). As presence's TAKEOVER_CSEQ_GAP does for its NOTIFYs.
LOADED_CSEQ_GAP = 100

Record = PubRecord | SubRecord
Key = PubKey | SubKey


@dataclass(slots=True)
class _Written:
    row_id: int | None            # None: not in the table yet
    record: Record | None         # the record as last written (identity compared)
    row: dict[str, Any] | None    # its row as last written


class PuaStore:
    """One worker's rows of the pua table `table` on `db`."""

    def __init__(self, db: Any, table: str, *, slot: int = 0, n_total: int = 1,
                 clock: Callable[[], float], update_period: int = 30) -> None:
        self.db = db
        self.table = table
        self.slot = slot
        self.n_total = n_total
        self._clock = clock
        self._stale_after = max(STALE_AFTER, 2.0 * update_period)
        self._written: dict[Key, _Written] = {}
        self._doomed: set[int] = set()   # row ids to delete at the next write (expired, duplicates)
        self.loaded = self.skipped = 0

    # --- start --------------------------------------------------------------------------------------
    async def load(self, pubs: PubTable, subs: SubTable) -> None:
        """This worker's rows back into the tables. A row that cannot be a record is logged and skipped
        (left in the table); an expired one is deleted at the first write."""
        now = self._clock()
        for row in await self.db.query(self.table):
            if row_owner(_str(row.get("call_id")), _str(row.get("from_tag")), self.n_total) != self.slot:
                continue
            row_id = row.get("id")
            what = "subscription" if is_subscription(row) else "publication"
            try:
                rec: Record = subscription_of(row, now) if is_subscription(row) else publication_of(row, now)
            except BadRow as exc:
                log.error("pua table %s: row id=%s (%s %s) skipped: %s", self.table, row_id, what,
                          row.get("pres_uri"), exc)
                self.skipped += 1
                continue
            if rec.expires_at <= now or rec.desired_at <= now:
                log.info("pua table %s: %s of %s (%s) expired while we were down: deleted", self.table, what,
                         rec.key.pres_uri, rec.key.event)
                self._doom(row_id)
                continue
            if rec.key in self._written:   # a second row for one record: the first one read stays
                self._doom(row_id)
                continue
            if isinstance(rec, SubRecord):
                rec = replace(rec, cseq=rec.cseq + LOADED_CSEQ_GAP)
            try:
                restored = subs.restore(rec) if isinstance(rec, SubRecord) else pubs.restore(rec)
            except (PuaFull, SubsFull) as exc:
                log.error("pua table %s: %s of %s not loaded: %s", self.table, what, rec.key.pres_uri, exc)
                continue
            # restored: written as it is; not (its publisher made it again first): that one overwrites it
            self._written[rec.key] = _Written(row_id if isinstance(row_id, int) else None,
                                              rec if restored else None, None)
            self.loaded += restored

    def _doom(self, row_id: Any) -> None:
        if isinstance(row_id, int):
            self._doomed.add(row_id)

    # --- write-back -----------------------------------------------------------------------------------
    async def write_back(self, pubs: PubTable, subs: SubTable) -> int:
        """Changed records written, forgotten ones' rows deleted, in one transaction; then (worker 0)
        stale rows deleted. Returns the rows written or deleted. Raises the database's error (the caller
        logs it; nothing is marked written, so the next period writes it all again)."""
        writes: list[tuple[Key, Record, dict[str, Any]]] = []
        held: set[Key] = set()
        for rec in _records(pubs, subs):
            if not _confirmed(rec):
                if rec.key in self._written:
                    held.add(rec.key)   # published afresh after a 412: its row stays until confirmed
                continue   # nothing a restart could resume
            held.add(rec.key)
            last = self._written.get(rec.key)
            if last is not None and last.record is rec:
                continue
            try:
                row = row_of_subscription(rec) if isinstance(rec, SubRecord) else row_of_publication(rec)
            except BadRow as exc:   # no event bit, or too long for a column: it lives in memory only
                if last is None:
                    log.warning("pua: %s (%s) not written to the pua table: %s", rec.key.pres_uri,
                                rec.key.event, exc)
                self._written[rec.key] = _Written(None, rec, None)
                continue
            if last is None or last.row != row:
                writes.append((rec.key, rec, row))
            else:
                last.record = rec
        gone = [key for key in self._written if key not in held]
        doomed = set(self._doomed)
        inserted: dict[Key, int | None] = {}
        if writes or gone or doomed:
            async with self.db.transaction():
                for key, _rec, row in writes:
                    last = self._written.get(key)
                    if last is None or last.row_id is None \
                            or not await self.db.update(self.table, {"id": last.row_id}, row):
                        # new, or its row deleted meanwhile (by worker 0 as stale, or by hand)
                        inserted[key] = await self.db.insert(self.table, row)
                for key in gone:
                    row_id = self._written[key].row_id
                    if row_id is not None:
                        await self.db.delete(self.table, {"id": row_id})
                for row_id in doomed:
                    await self.db.delete(self.table, {"id": row_id})
        for key, rec, row in writes:
            last = self._written.get(key)
            row_id = inserted.get(key, last.row_id if last is not None else None)
            self._written[key] = _Written(row_id, rec, row)
        for key in gone:
            del self._written[key]
        self._doomed -= doomed
        stale = 0
        if self.slot == 0:
            cutoff = int(self._clock() - self._stale_after)
            stale = await self.db.delete(self.table, {"expires": ("<", cutoff)})
            if stale:
                log.info("pua table %s: %d row(s) nobody refreshed deleted", self.table, stale)
        return len(writes) + len(gone) + len(doomed) + stale


def _confirmed(rec: Record) -> bool:
    """A publication after its first 2xx (an ETag), a subscription with its dialog (the notifier's tag)."""
    return rec.etag is not None if isinstance(rec, PubRecord) else bool(rec.to_tag)


def _records(pubs: PubTable, subs: SubTable) -> list[Record]:
    out: list[Record] = list(pubs)
    out.extend(subs)
    return out


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
