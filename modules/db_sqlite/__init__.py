"""db_sqlite - the SQLite backend is built into routescript.db (aiosqlite); this package lets scripts
`loadmodule "db_sqlite.so"` and accepts its parameters. `sqlite://` db_url values work with or without it."""

from __future__ import annotations

from routescript.core.module import Module, Param


class DbSqliteModule(Module):
    name = "db_sqlite"
    params = (
        Param("alloc_limit", int, 10, "accepted"),
        Param("load_extension", str, "", "accepted; extensions are not loaded", multi=True),
        Param("busy_timeout", int, 500, "accepted"),
        Param("exec_query_threshold", int, 0, "accepted"),
    )


MODULE = DbSqliteModule
