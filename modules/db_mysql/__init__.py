"""db_mysql - the MySQL/MariaDB backend is built into routescript.db (asyncmy, `pip install
routescript[mysql]`); this package lets scripts `loadmodule "db_mysql.so"` and takes its parameters.
`mysql://` db_url values work with or without it (docs/modules/db_mysql.md)."""

from __future__ import annotations

from routescript.core.module import Module, Param


def _no_tls(value: object) -> None:
    if value not in (0, None):
        raise ValueError("use_tls: TLS to the MySQL server is not implemented by routescript (use 0, or a "
                         "local socket / a TLS tunnel)")


class DbMysqlModule(Module):
    name = "db_mysql"
    # OpenSIPS 3.4's db_mysql parameters. The connection handling they tune is routescript.db's own (a pool,
    # a back-off after a loss, 5 s connect and 30 s read timeouts, docs/modules/db_mysql.md): they are
    # accepted so an OpenSIPS script loads, and do not change it.
    params = (
        Param("ping_interval", int, 300, "accepted (pooled connections are checked on use)"),
        Param("timeout_interval", int, 2, "accepted (connect timeout 5 s, read timeout 30 s)"),
        Param("exec_query_threshold", int, 0, "accepted"),
        Param("max_db_retries", int, 3, "accepted (reconnects follow the back-off)"),
        Param("max_db_queries", int, 2, "accepted (deadlocks are retried up to 3 times)"),
        Param("ps_max_col_count", int, 64, "accepted"),
        Param("use_tls", int, 0, "TLS to the server: 0 only (not implemented)", check=_no_tls),
    )


MODULE = DbMysqlModule
