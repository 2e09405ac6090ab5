"""db_postgres - the PostgreSQL backend is built into routescript.db (asyncpg); this package lets scripts
`loadmodule "db_postgres.so"` and accepts its parameters."""

from __future__ import annotations

from routescript.core.module import Module, Param


class DbPostgresModule(Module):
    name = "db_postgres"
    params = (
        Param("exec_query_threshold", int, 0, "accepted"),
        Param("max_db_queries", int, 2, "accepted"),
        Param("timeout", int, 5, "accepted"),
        Param("use_tls", int, 0, "accepted"),
    )


MODULE = DbPostgresModule
