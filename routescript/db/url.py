"""Database URLs, read the way OpenSIPS reads its `db_url` so the same opensips.cfg line opens the same data.

SQLite: OpenSIPS's db_sqlite drops the leading "sqlite:/" and hands the rest to sqlite3_open(), so
    sqlite:///var/lib/op.db  ->  sqlite3_open("//var/lib/op.db")  ==  /var/lib/op.db
    sqlite://var/lib/op.db   ->  sqlite3_open("/var/lib/op.db")   (also absolute!)
Both forms are absolute paths; there is no relative form in OpenSIPS and we add none, so a URL never means a
different file depending on the working directory. One addition of ours: `sqlite://:memory:` is a private
in-memory database (OpenSIPS would create a file named "/:memory:"), handy for tests.

PostgreSQL: `postgres://user:pass@host:port/db` (OpenSIPS's db_postgres form) or `postgresql://...`, handed
to asyncpg as it is; query parameters pass through (e.g. `?options=-csearch_path%3Dmyschema`).

MySQL/MariaDB: `mysql://user:pass@host[:port]/db` (OpenSIPS's db_mysql form; port 3306 by default). User and
password may be %-escaped. No query parameters (OpenSIPS's db_mysql takes none either): refused when given.

The drivers of the two servers are optional extras (`pip install routescript[postgres]`, `[mysql]`): a URL
whose driver is not installed is refused when the script is loaded, naming the extra to install.
"""

from __future__ import annotations

import importlib.util
import posixpath
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from routescript.db.errors import DatabaseError


@dataclass(frozen=True, slots=True)
class DbUrl:
    backend: Literal["sqlite", "postgres", "mysql"]
    path: str = ""      # sqlite: the file (or ":memory:")
    dsn: str = ""       # postgres: the URL for asyncpg
    redacted: str = ""  # safe to log: the password replaced by ***
    # mysql: where and who
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = ""
    database: str = ""


# The driver each server back end needs, and the extra that installs it.
DRIVERS = {"postgres": ("asyncpg", "postgres"), "mysql": ("asyncmy", "mysql")}


_PASSWORD = re.compile(r"^([a-z]+://[^:/@]*):([^@/]*)@")


def parse_url(url: str) -> DbUrl:
    """Split a db_url into backend and target. A malformed URL raises DatabaseError(kind="config")."""
    if not isinstance(url, str) or not url.strip():
        raise DatabaseError("empty database URL", "config")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise DatabaseError(f"bad database URL '{url}': expected scheme://...", "config")
    if scheme == "sqlite":
        if rest == ":memory:":
            return DbUrl("sqlite", path=":memory:", redacted=url)
        path = "/" + rest.lstrip("/")
        if path == "/" or path.endswith("/"):
            raise DatabaseError(f"bad database URL '{url}': no database file named", "config")
        if "\x00" in path:
            raise DatabaseError("bad database URL: NUL byte in the path", "config")
        return DbUrl("sqlite", path=posixpath.normpath(path), redacted=url)
    if scheme in ("postgres", "postgresql"):
        if rest in ("", "/"):
            raise DatabaseError(f"bad database URL '{url}': expected postgres://user:pass@host:port/db",
                                "config")
        return DbUrl("postgres", dsn=url, redacted=_PASSWORD.sub(r"\1:***@", url))
    if scheme == "mysql":
        return _mysql(url)
    raise DatabaseError(f"unsupported database URL scheme '{scheme}' (use sqlite://, postgres:// or mysql://)",
                        "config")


def _mysql(url: str) -> DbUrl:
    shape = "expected mysql://user:pass@host[:port]/db"
    redacted = _PASSWORD.sub(r"\1:***@", url)
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
    except ValueError as exc:
        raise DatabaseError(f"bad database URL '{redacted}': {exc}; {shape}", "config") from None
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database or "/" in database:
        raise DatabaseError(f"bad database URL '{redacted}': {shape}", "config")
    if parts.query or parts.fragment:
        raise DatabaseError(f"bad database URL '{redacted}': mysql:// URLs take no parameters", "config")
    return DbUrl("mysql", dsn=url, redacted=redacted, host=parts.hostname, port=port,
                 user=unquote(parts.username or ""), password=unquote(parts.password or ""),
                 database=database)


def check_driver(target: DbUrl) -> None:
    """Refuse a server URL whose driver is not installed, naming the extra that installs it."""
    if target.backend not in DRIVERS:
        return
    module, extra = DRIVERS[target.backend]
    if importlib.util.find_spec(module) is None:
        raise DatabaseError(f"database URL '{target.redacted}' needs the {module} driver, which is not "
                            f"installed: pip install 'routescript[{extra}]'", "config")


def check_db_url(url: object) -> None:
    """A db_url modparam's check (Param.check): the URL `run` could open, judged when the script is
    loaded, so `routescript check` refuses what `run` would refuse at start-up, in the same words, and
    without opening anything. Unset or empty (a module's library mode) passes. ValueError says why."""
    if url is None or url == "":
        return
    try:
        check_driver(parse_url(str(url)))
    except DatabaseError as exc:
        raise ValueError(str(exc)) from None
