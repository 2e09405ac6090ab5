"""db_postgres - the PostgreSQL backend is built into routescript.db (asyncpg, `pip install
routescript[postgres]`); this package lets scripts `loadmodule "db_postgres.so"` and takes its parameters
(docs/modules/db_postgres.md)."""

from __future__ import annotations

from routescript.core.module import Module, Param


def _no_tls(value: object) -> None:
    if value not in (0, None):
        raise ValueError("use_tls: TLS to the PostgreSQL server through tls_mgm is not implemented by "
                         "routescript; ask the driver for it in the URL instead (postgres://...?sslmode=require)")


class DbPostgresModule(Module):
    name = "db_postgres"
    params = (
        Param("exec_query_threshold", int, 0, "accepted: no slow-query warning"),
        Param("max_db_queries", int, 2, "accepted: a lost connection follows the back-off"),
        Param("timeout", int, 5, "accepted: connect timeout 5 s, statement timeout 30 s"),
        Param("use_tls", int, 0, "0 only", check=_no_tls),
    )


MODULE = DbPostgresModule
