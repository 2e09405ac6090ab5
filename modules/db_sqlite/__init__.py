"""db_sqlite - the SQLite backend is built into routescript.db (aiosqlite); this package lets scripts
`loadmodule "db_sqlite.so"` and takes its parameters. `sqlite://` db_url values work with or without it
(docs/modules/db_sqlite.md). Loading SQLite extensions is refused: nothing of ours needs one, and an
extension is native code run inside the server."""

from __future__ import annotations

from routescript.core.module import Module, Param


def _no_extension(values: object) -> None:
    if values:
        raise ValueError("load_extension: loading SQLite extensions is not implemented by routescript")


class DbSqliteModule(Module):
    name = "db_sqlite"
    params = (
        Param("alloc_limit", int, 10, "accepted: rows are fetched by the driver"),
        Param("load_extension", str, "", "refused when given", multi=True, check=_no_extension),
        Param("busy_timeout", int, 500, "accepted: routescript waits 5000 ms for the write lock"),
        Param("exec_query_threshold", int, 0, "accepted: no slow-query warning"),
    )


MODULE = DbSqliteModule
