"""The database handles the modules share (server.database): one per URL, closed at the server's stop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routescript.db import Database

log = logging.getLogger("routescript.core")


class Databases:
    """The routescript.db handles modules share: one per URL, opened on first use, closed at stop."""

    def __init__(self) -> None:
        self._open: dict[str, Database] = {}

    async def get(self, url: str) -> Database:
        """A routescript.db handle for `url`, opened once and shared; closed at stop()."""
        if url not in self._open:
            from routescript.db import open_database
            self._open[url] = await open_database(url)
        return self._open[url]

    async def close_all(self) -> None:
        for db in self._open.values():
            try:
                await db.close()
            except Exception:
                log.exception("closing database failed")
        self._open.clear()
